"""The agent's Kubernetes API calls: its config watch, its reads and its one write.

An agent writes exactly one thing: the status of its own NodeAgentConfig
(capabilities, heartbeat and one report per session it serves), by merge
patch of the status subresource. It reads its sessions' specs (once per
generation) and, on start, its own previous status to continue its totals.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from kubernetes_asyncio.client import CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from orb8_common.crd import GROUP, NODE_AGENT_CONFIGS, PLURAL_BY_KIND, VERSION
from orb8_common.errors import ClusterUnavailableError
from orb8_common.listwatch import Listing, list_watch, raw
from orb8_common.watchstate import WatchState

log = logging.getLogger(__name__)
# The client's stubs omit `_content_type`, which selects the patch type at run time.
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
WATCH_TIMEOUT_S = 60
RETRY_BACKOFF_S = (0.5, 1, 2, 5, 10)


async def read_session_spec(
    *, api: CustomObjectsApi, kind: str, namespace: str, name: str
) -> dict[str, Any] | None:
    """The spec and generation of one session (``{"spec":…, "generation":…}``); None when gone."""
    try:
        obj = await api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL_BY_KIND[kind], name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise ClusterUnavailableError(
            f"{kind} {namespace}/{name}: {err.status} {err.reason}"
        ) from err
    except (TimeoutError, OSError) as err:
        raise ClusterUnavailableError(f"{kind} {namespace}/{name}: {err}") from err
    meta = obj.get("metadata") or {}
    return {"spec": obj.get("spec") or {}, "generation": meta.get("generation", 0),
            "uid": meta.get("uid", "")}  # fmt: skip


async def read_agent_status(*, api: CustomObjectsApi, node: str) -> dict[str, Any]:
    """NodeAgentConfig/<node>.status as stored ({} when the object does not exist)."""
    try:
        obj = await api.get_cluster_custom_object(GROUP, VERSION, NODE_AGENT_CONFIGS, node)
    except ApiException as err:
        if err.status == 404:
            return {}
        raise ClusterUnavailableError(f"NodeAgentConfig {node}: {err.status} {err.reason}") from err
    except (TimeoutError, OSError) as err:
        raise ClusterUnavailableError(f"NodeAgentConfig {node}: {err}") from err
    return dict(obj.get("status") or {})


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
    except (TimeoutError, OSError) as err:
        raise ClusterUnavailableError(f"NodeAgentConfig {node}: {err}") from err
    return True


async def watch_node_config(
    *, api: CustomObjectsApi, node: str, state: WatchState | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Yield NodeAgentConfig/<node>'s spec each time it changes ({} while it is absent).

    :func:`~orb8_common.listwatch.list_watch` with a field selector on the
    name: lists, then watches from the listed resourceVersion with a
    server-side timeout (and a client-side one, for a server that stops
    answering), resuming from the last version seen; on any error it backs
    off, and relists after 410 Gone. ``state`` follows the connection for
    readiness and metrics.
    """
    state = state or WatchState(name="nodeagentconfig")
    last: dict[str, Any] | None = None
    async for item in list_watch(
        list_func=api.list_cluster_custom_object, args=(GROUP, VERSION, NODE_AGENT_CONFIGS),
        kwargs={"field_selector": f"metadata.name={node}"}, state=state,
        timeout_s=WATCH_TIMEOUT_S, backoff_s=RETRY_BACKOFF_S, log=log,
        what=f"NodeAgentConfig/{node}", convert=raw,
    ):  # fmt: skip
        if isinstance(item, Listing):
            spec = dict(item.items[0].get("spec") or {}) if item.items else {}
        else:
            spec = {} if item.type == "DELETED" else dict(item.obj.get("spec") or {})
        if spec != last:
            last = spec
            yield spec
