"""Thin kopf handlers. All decisions live in the pure modules; these only read
kopf's indices, call :func:`reconcile_session`, and carry out its outcome:
status patch, Events, NodeAgentConfig writes and TTL deletion.

NodeAgentConfigs are written by one background loop from the registry of
active sessions, so concurrent session handlers never race on a node's
object. Sessions that exist but were not reconciled yet (right after a
restart) keep their stored entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio import client

from orb8_common.errors import Orb8Error
from orb8_common.models import SessionKind
from orb8_operator import kube
from orb8_operator.metrics import metrics
from orb8_operator.nodeconfig import (
    ActiveSession,
    build_node_configs,
    keep_unreconciled,
    plan_node_configs,
    refresh_targets,
)
from orb8_operator.podcache import PodCache
from orb8_operator.pods import node_index_value
from orb8_operator.reconcile import SessionOutcome, changed_fields, reconcile_session

__all__ = ["OperatorState", "configure_settings", "state", "to_kopf_error"]

GROUP, VERSION = kube.GROUP, kube.VERSION
# orb8-operator's --session-resync / --node-config-resync set these before this module loads.
RECONCILE_INTERVAL = float(os.environ.get("ORB8_SESSION_RESYNC_S", "5"))  # per-session timer
RESYNC_INTERVAL = float(os.environ.get("ORB8_NODE_CONFIG_RESYNC_S", "30"))  # NodeAgentConfigs
SYNC_COALESCE_S = 0.5  # changes arriving this close together are written together
_log = logging.getLogger("orb8.operator")


@dataclass
class OperatorState:
    """What the handlers share inside one operator process."""

    api: client.ApiClient | None = None
    sessions: dict[str, ActiveSession] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # uids reconciled at least once
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    sync_task: asyncio.Task[None] | None = None
    pods: PodCache = field(default_factory=PodCache)
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # as last indexed
    pods_task: asyncio.Task[None] | None = None


_STATE = OperatorState()


def state() -> OperatorState:
    return _STATE


def to_kopf_error(*, err: Orb8Error) -> kopf.TemporaryError | kopf.PermanentError:
    """Retryable orb8 errors are retried by kopf; the rest stop the handler."""
    if err.retryable:
        return kopf.TemporaryError(str(err), delay=10)
    return kopf.PermanentError(str(err))


def configure_settings(*, settings: kopf.OperatorSettings) -> None:
    """orb8's own prefixes, watch timeouts that notice a dead watch, bounded retries."""
    settings.persistence.finalizer = "orb8.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="orb8.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="orb8.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.execution.max_workers = 4
    settings.execution.default_backoff = 10
    settings.posting.reporting_component = "orb8-operator"
    # Timers and daemons must stop fast, or deletion waits on the finalizer.
    settings.background.cancellation_polling = 5
    settings.background.instant_exit_timeout = 5


# --- indices -------------------------------------------------------------------------


@kopf.index("nodes")
def node_labels(*, body: kopf.Body, **_: Any) -> dict[str, tuple[tuple[str, str], ...]]:
    return node_index_value(body=body)


def _labels(index: kopf.Index[str, tuple[tuple[str, str], ...]]) -> dict[str, dict[str, str]]:
    return {name: dict(pairs) for name, store in index.items() for pairs in store}


# --- operator lifecycle ----------------------------------------------------------------


@kopf.on.startup()
async def startup(*, settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_settings(settings=settings)
    st = state()
    st.api = await kube.new_api_client()
    m = metrics()
    m.pods_watch = st.pods.watch
    m.pods_tracked = lambda: len(st.pods)
    m.sessions_by_kind = lambda: _count_kinds(list(st.sessions.values()))
    st.pods_task = asyncio.create_task(
        st.pods.run(api=st.api, on_change=st.dirty.set), name="orb8-pod-watch"
    )
    st.sync_task = asyncio.create_task(_sync_loop(st), name="orb8-nodeconfig-sync")


def _count_kinds(sessions: list[ActiveSession]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for session in sessions:
        counts[session.kind] = counts.get(session.kind, 0) + 1
    return counts


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    st = state()
    for task in (st.sync_task, st.pods_task):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if st.api is not None:
        await st.api.close()


@kopf.on.probe(id="activeSessions")
def active_sessions(**_: Any) -> int:
    return len(state().sessions)


async def sync_node_configs(*, st: OperatorState) -> None:
    """Bring every NodeAgentConfig in line with the registry of active sessions."""
    if st.api is None:
        return
    changed = st.pods.take_changed_namespaces()
    if changed:
        st.sessions = refresh_targets(
            sessions=st.sessions, changed_namespaces=changed,
            pods_in=lambda namespaces: list(st.pods.entries(namespaces=namespaces)),
            node_labels=st.node_labels,
        )  # fmt: skip
    current = await kube.list_node_configs(api=st.api)
    existing = await kube.list_session_uids(api=st.api)
    desired = keep_unreconciled(
        desired=build_node_configs(sessions=st.sessions.values()),
        current=current,
        keep_uids=existing - st.seen,
    )
    metrics().node_configs = len(desired)
    plan = plan_node_configs(desired=desired, current=current)
    if not plan.empty:
        _log.info(
            "nodeagentconfigs: create %s, update %s, delete %s",
            sorted(plan.create),
            sorted(plan.patch),
            list(plan.delete),
        )
        await kube.apply_node_config_plan(api=st.api, plan=plan)


async def _sync_loop(st: OperatorState) -> None:
    delay = 1.0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(st.dirty.wait(), timeout=RESYNC_INTERVAL)
        # Coalesce a burst (many sessions applied at once) into one round of writes.
        await asyncio.sleep(SYNC_COALESCE_S)
        st.dirty.clear()
        try:
            await sync_node_configs(st=st)
            metrics().node_config_sync(ok=True)
            delay = 1.0
            continue
        except Orb8Error as err:
            _log.warning("nodeagentconfig sync failed, retrying in %.0fs: %s", delay, err)
        except Exception:
            # The loop must outlive any bug or transport error, or agents stop getting updates.
            _log.exception("nodeagentconfig sync crashed, retrying in %.0fs", delay)
        metrics().node_config_sync(ok=False)
        st.dirty.set()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


# --- sessions ---------------------------------------------------------------------------


def _register(st: OperatorState, outcome: SessionOutcome) -> None:
    st.seen.add(outcome.uid)
    before = st.sessions.get(outcome.uid)
    if outcome.active is None:
        st.sessions.pop(outcome.uid, None)
    else:
        st.sessions[outcome.uid] = outcome.active
    if before != outcome.active:
        st.dirty.set()


async def _reconcile(
    *,
    kind: SessionKind,
    body: kopf.Body,
    patch: kopf.Patch,
    logger: kopf.Logger,
    nodes: kopf.Index[str, tuple[tuple[str, str], ...]],
    fail_on_invalid: bool,
) -> None:
    st = state()
    # An empty index right after a restart would drop every session's targets.
    await st.pods.ready.wait()
    st.node_labels = _labels(nodes)
    selector = (body.get("spec") or {}).get("selector") or {}
    namespaces = selector.get("namespaces") or [body.get("metadata", {}).get("namespace", "")]
    started = time.perf_counter()
    outcome = reconcile_session(
        kind=kind,
        body=body,
        pods=st.pods.entries(namespaces=namespaces),
        all_pods=st.pods.entries(),
        node_labels=st.node_labels,
        now=datetime.now(UTC),
    )
    metrics().observe_reconcile(kind=kind, seconds=time.perf_counter() - started)
    current = body.get("status") or {}
    for key, value in changed_fields(current=current, patch=outcome.status).items():
        patch.status[key] = value
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    for problem in outcome.problems:
        logger.warning("skipped a malformed node report: %s", problem)
    _register(st, outcome)
    if outcome.delete and st.api is not None:
        logger.info("ttlSecondsAfterFinished has passed; deleting")
        try:
            await kube.delete_session(
                api=st.api, kind=kind, namespace=outcome.namespace, name=outcome.name
            )
        except Orb8Error as err:
            raise to_kopf_error(err=err) from err
    if fail_on_invalid and outcome.spec_error is not None:
        # The Failed status above is still written; kopf stops retrying this generation.
        raise kopf.PermanentError(outcome.spec_error)


def _forget(uid: str) -> None:
    st = state()
    st.seen.add(uid)
    if st.sessions.pop(uid, None) is not None:
        st.dirty.set()


def _register_kind(kind: SessionKind, plural: str) -> None:
    """Attach the change handlers, timer and deletion handler for one session kind."""

    @kopf.on.create(GROUP, VERSION, plural, id=f"{plural}-reconcile")
    @kopf.on.resume(GROUP, VERSION, plural, id=f"{plural}-reconcile")
    @kopf.on.update(GROUP, VERSION, plural, field="spec", id=f"{plural}-reconcile")
    async def changed(
        *, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        await _reconcile(
            kind=kind,
            body=body,
            patch=patch,
            logger=logger,
            nodes=kwargs["node_labels"],  # kopf passes indices by their names
            fail_on_invalid=True,
        )

    # The first tick waits one interval: the create/resume handler has just run.
    @kopf.timer(
        GROUP,
        VERSION,
        plural,
        interval=RECONCILE_INTERVAL,
        initial_delay=RECONCILE_INTERVAL,
        id=f"{plural}-tick",
    )
    async def tick(
        *, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        await _reconcile(
            kind=kind,
            body=body,
            patch=patch,
            logger=logger,
            nodes=kwargs["node_labels"],  # kopf passes indices by their names
            fail_on_invalid=False,
        )

    @kopf.on.delete(GROUP, VERSION, plural, id=f"{plural}-forget")
    def deleted(*, meta: Mapping[str, Any], **_: Any) -> None:
        _forget(str(meta.get("uid", "")))


_register_kind("TraceSession", "tracesessions")
_register_kind("GpuTelemetry", "gputelemetries")
