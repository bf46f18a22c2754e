"""The operator's few Kubernetes API calls (kubernetes_asyncio), with API errors
mapped onto the orb8 error tree. Kept apart from the kopf handlers so each
call is one small, named function.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from orb8_common.crd import GROUP, PLURAL_BY_KIND, VERSION
from orb8_common.errors import ClusterUnavailableError, Orb8Error
from orb8_operator.nodeconfig import NodeConfigPlan

__all__ = [
    "GROUP",
    "MANAGED_BY",
    "PLURALS",
    "VERSION",
    "apply_node_config_plan",
    "delete_session",
    "list_node_configs",
    "list_session_uids",
    "new_api_client",
    "patch_session_status",
    "post_event",
    "translate",
]

PLURALS: Mapping[str, str] = PLURAL_BY_KIND
MANAGED_BY = "orb8-operator"
_MERGE_PATCH = "application/merge-patch+json"
_MANAGED_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}
_MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# What a request can raise: an HTTP answer, or no answer at all.
_FAILURES = (ApiException, aiohttp.ClientError, TimeoutError)


def _status(err: Exception) -> int:
    return int(getattr(err, "status", 0) or 0) if isinstance(err, ApiException) else 0


class ApiRequestError(Orb8Error):
    """The apiserver refused a request for a reason retrying will not fix."""


def translate(err: Exception, *, what: str) -> Orb8Error:
    """Server errors, throttling, conflicts and transport errors are retryable; other 4xx not."""
    if not isinstance(err, ApiException):
        return ClusterUnavailableError(f"{what}: {type(err).__name__}: {err}")
    status = _status(err)
    text = f"{what}: HTTP {status} {getattr(err, 'reason', '')}".strip()
    if status in (0, 409, 429) or status >= 500:
        return ClusterUnavailableError(text)
    return ApiRequestError(text)


async def new_api_client() -> client.ApiClient:
    """An API client from the in-cluster service account, else $KUBECONFIG / ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    cfg = client.Configuration()
    await config.load_kube_config(
        config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg
    )
    return client.ApiClient(configuration=cfg)


async def list_node_configs(*, api: client.ApiClient) -> dict[str, dict[str, Any]]:
    """node name → stored spec of every NodeAgentConfig this operator manages.

    Objects without the managed-by label are not ours to patch or delete.
    """
    objects = client.CustomObjectsApi(api)
    try:
        found = await objects.list_cluster_custom_object(
            GROUP, VERSION, PLURALS["NodeAgentConfig"], label_selector=_MANAGED_SELECTOR
        )
    except _FAILURES as err:
        raise translate(err, what="list nodeagentconfigs") from err
    out: dict[str, dict[str, Any]] = {}
    for item in found.get("items") or ():
        name = (item.get("metadata") or {}).get("name")
        if isinstance(name, str):
            out[name] = item.get("spec") or {}
    return out


async def list_session_uids(*, api: client.ApiClient) -> set[str]:
    """The uids of every TraceSession and GpuTelemetry that exists now."""
    objects = client.CustomObjectsApi(api)
    uids: set[str] = set()
    for kind in ("TraceSession", "GpuTelemetry"):
        try:
            found = await objects.list_cluster_custom_object(GROUP, VERSION, PLURALS[kind])
        except _FAILURES as err:
            raise translate(err, what=f"list {PLURALS[kind]}") from err
        for item in found.get("items") or ():
            uid = (item.get("metadata") or {}).get("uid")
            if isinstance(uid, str):
                uids.add(uid)
    return uids


NODE_CONFIG_WRITES_IN_FLIGHT = 8


async def _drain(response: Any) -> None:
    """Read and drop a response the operator does not need (a whole NodeAgentConfig):
    the connection goes back to the pool without the body being decoded. Raises
    ApiException for an error status, as a preloaded call would."""
    body = await response.read()
    if not 200 <= response.status <= 299:
        err = ApiException(status=response.status, reason=response.reason)
        err.body = body
        raise err


async def apply_node_config_plan(
    *, api: client.ApiClient, plan: NodeConfigPlan
) -> dict[str, dict[str, Any] | None]:
    """Create, replace the spec of, and delete NodeAgentConfigs as planned.

    Writes go out a few at a time: one node's config can hold hundreds of
    sessions, and the apiserver validates each object on its own. Returns
    node → the spec now stored (None: deleted).
    """
    written: dict[str, dict[str, Any] | None] = {}
    objects = client.CustomObjectsApi(api)
    plural = PLURALS["NodeAgentConfig"]
    limit = asyncio.Semaphore(NODE_CONFIG_WRITES_IN_FLIGHT)

    async def write(node: str, spec: Mapping[str, Any]) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "NodeAgentConfig",
            "metadata": {"name": node, "labels": _MANAGED_LABELS},
            "spec": spec,
        }
        # An unlabelled object of the same name is taken over by the patch.
        patch = {"metadata": {"labels": _MANAGED_LABELS}, "spec": spec}
        async with limit:
            try:
                if node in plan.create:
                    try:
                        await _drain(
                            await objects.create_cluster_custom_object(
                                GROUP, VERSION, plural, body, _preload_content=False
                            )
                        )
                        written[node] = dict(spec)
                        return
                    except ApiException as err:
                        if err.status != 409:
                            raise
                # CRDs take no strategic merge patch; the stub lacks _content_type.
                await _drain(
                    await objects.patch_cluster_custom_object(  # type: ignore[call-arg]
                        GROUP, VERSION, plural, node, patch, _content_type=_MERGE_PATCH,
                        _preload_content=False,
                    )
                )  # fmt: skip
                written[node] = dict(spec)
            except _FAILURES as err:
                raise translate(err, what=f"write nodeagentconfig/{node}") from err

    async def delete(node: str) -> None:
        async with limit:
            try:
                await objects.delete_cluster_custom_object(GROUP, VERSION, plural, node)
            except _FAILURES as err:
                if _status(err) != 404:
                    raise translate(err, what=f"delete nodeagentconfig/{node}") from err
            written[node] = None

    await asyncio.gather(
        *(write(node, spec) for node, spec in {**plan.create, **plan.patch}.items()),
        *(delete(node) for node in plan.delete),
    )
    return written


async def patch_session_status(
    *, api: client.ApiClient, kind: str, namespace: str, name: str, status: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch a session's status; the stored object, or None when it is gone."""
    objects = client.CustomObjectsApi(api)
    try:
        stored: dict[str, Any] = await objects.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            GROUP, VERSION, namespace, PLURALS[kind], name, {"status": dict(status)},
            _content_type=_MERGE_PATCH,
        )  # fmt: skip
    except _FAILURES as err:
        if _status(err) == 404:
            return None
        raise translate(err, what=f"status of {PLURALS[kind]}/{namespace}/{name}") from err
    return stored


async def delete_session(*, api: client.ApiClient, kind: str, namespace: str, name: str) -> None:
    """Delete a finished session whose TTL expired; already gone is fine."""
    objects = client.CustomObjectsApi(api)
    try:
        await objects.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name
        )
    except _FAILURES as err:
        if _status(err) != 404:
            raise translate(err, what=f"delete {PLURALS[kind]}/{namespace}/{name}") from err


async def post_event(
    *, api: client.ApiClient, body: Mapping[str, Any], type_: str, reason: str, message: str
) -> None:
    """A core/v1 Event about a session (what kopf.event does inside handlers)."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    now = datetime.now(UTC)
    event = {
        "metadata": {"generateName": f"{meta.get('name', 'session')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": body.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": namespace,
            "uid": meta.get("uid", ""),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "reportingInstance": MANAGED_BY,
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "count": 1,
    }
    try:
        # The client takes a plain dict body as well as its model.
        await client.CoreV1Api(api).create_namespaced_event(namespace, event)  # type: ignore[arg-type]
    except _FAILURES as err:
        raise translate(err, what=f"event {reason} for {namespace}/{meta.get('name')}") from err
