"""The agent's only writes to the Kubernetes API, and its config watch.

An agent writes exactly two things: its own entry of each session's
``status.nodes`` (server-side apply under ``orb8-agent/<node>``, so it can
never clobber another node's entry), and the status of its own
NodeAgentConfig.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes_asyncio import watch
from kubernetes_asyncio.client import CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from orb8_common.crd import (
    API_VERSION,
    GROUP,
    NODE_AGENT_CONFIGS,
    PLURAL_BY_KIND,
    VERSION,
    agent_field_manager,
)
from orb8_common.errors import ClusterUnavailableError
from orb8_common.watchstate import WatchState

log = logging.getLogger(__name__)
# The client's stubs omit `_content_type`, which selects the patch type at run time.
APPLY_PATCH: dict[str, Any] = {"_content_type": "application/apply-patch+yaml"}
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
WATCH_TIMEOUT_S = 60
RETRY_BACKOFF_S = (0.5, 1, 2, 5, 10)


async def apply_node_entry(
    *, api: CustomObjectsApi, kind: str, namespace: str, name: str, node: str,
    entry: Mapping[str, Any],
) -> bool:  # fmt: skip
    """Apply this node's ``status.nodes`` entry; False when the session is gone."""
    body = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": {"nodes": [dict(entry)]},
    }
    try:
        await api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL_BY_KIND[kind], name, body,
            field_manager=agent_field_manager(node=node), force=True,
            **APPLY_PATCH,
        )  # fmt: skip
    except ApiException as err:
        if err.status == 404:
            return False
        raise ClusterUnavailableError(
            f"status of {kind} {namespace}/{name}: {err.status} {err.reason}"
        ) from err
    return True


async def patch_agent_status(
    *, api: CustomObjectsApi, node: str, status: Mapping[str, Any]
) -> bool:
    """Merge the agent's report into NodeAgentConfig/<node>; False when it does not exist."""
    try:
        await api.patch_cluster_custom_object_status(
            GROUP, VERSION, NODE_AGENT_CONFIGS, node, {"status": dict(status)},
            **MERGE_PATCH,
        )  # fmt: skip
    except ApiException as err:
        if err.status == 404:
            return False
        raise ClusterUnavailableError(f"NodeAgentConfig {node}: {err.status} {err.reason}") from err
    return True


async def watch_node_config(
    *, api: CustomObjectsApi, node: str, state: WatchState | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield NodeAgentConfig/<node>'s spec each time it changes ({} while it is absent).

    Lists, then watches from the listed resourceVersion with a server-side
    timeout (and a client-side one, for a server that stops answering); on
    any error at all it backs off and relists. ``state`` follows the
    connection for readiness and metrics.
    """
    state = state or WatchState(name="nodeagentconfig")
    failures = 0
    last: dict[str, Any] | None = None
    selector = f"metadata.name={node}"
    while True:
        try:
            listing = await api.list_cluster_custom_object(
                GROUP, VERSION, NODE_AGENT_CONFIGS, field_selector=selector
            )
            state.synced()
            items = listing.get("items") or []
            spec = dict(items[0].get("spec") or {}) if items else {}
            if spec != last:
                last = spec
                yield spec
            version = listing["metadata"]["resourceVersion"]
            failures = 0
            async with watch.Watch() as stream:
                async for event in stream.stream(
                    api.list_cluster_custom_object, GROUP, VERSION, NODE_AGENT_CONFIGS,
                    field_selector=selector, resource_version=version,
                    timeout_seconds=WATCH_TIMEOUT_S, allow_watch_bookmarks=True,
                    _request_timeout=WATCH_TIMEOUT_S + 30,
                ):  # fmt: skip
                    state.synced()
                    kind = event["type"]
                    if kind == "BOOKMARK":
                        continue
                    obj = event["object"]
                    if kind == "ERROR":
                        break  # e.g. 410 Gone: relist
                    spec = {} if kind == "DELETED" else dict(obj.get("spec") or {})
                    if spec != last:
                        last = spec
                        yield spec
        except Exception as err:  # aiohttp payload errors and bugs alike: back off and relist
            state.lost(error=err)
            delay = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
            failures += 1
            log.warning(
                "watch of NodeAgentConfig/%s failed (%s); retrying in %ss",
                node, state.last_error, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
