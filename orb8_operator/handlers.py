"""Thin kopf handlers and the operator's two loops. All decisions live in the
pure modules; these only read the caches, call :func:`reconcile_session`, and
carry out its outcome: status patch, Events, NodeAgentConfig writes and TTL
deletion.

- kopf only watches: an ``on.event`` handler keeps every session's latest
  body and marks new sessions and spec changes urgent; an ``on.delete``
  handler (with the orb8.io finalizer) drops a deleted session from the node
  configs before it goes. kopf runs no per-session handler or timer.
- ONE resync loop (``_resync_loop``) reconciles the sessions that need it:
  those whose agents' reports changed (at most once per report interval,
  or after 5 s when a node's state changes, e.g. its first report),
  whose targets changed with the pods, and those due by the clock (a
  duration ending, TTL, stale reports). No per-session timers.
- One loop writes NodeAgentConfigs from the registry of active sessions, so
  concurrent handlers never race on a node's object. Sessions that exist but
  were not reconciled yet (right after a restart) keep their stored entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes_asyncio import client

from orb8_common.errors import InvalidSpecError, Orb8Error
from orb8_common.models import (
    GpuTelemetrySpec,
    NodeAgentConfigSpec,
    SessionKind,
    TraceSessionSpec,
    to_wire,
)
from orb8_operator import kube
from orb8_operator.mergepace import worth_merging_early
from orb8_operator.metrics import metrics
from orb8_operator.nodecache import NodeConfigCache
from orb8_operator.nodeconfig import (
    ActiveSession,
    keep_unreconciled,
    node_config_texts,
    plan_node_configs,
    refresh_targets,
)
from orb8_operator.podcache import PodCache
from orb8_operator.pods import PodEntry, node_index_value
from orb8_operator.reconcile import (
    DEFAULT_INTERVAL_SECONDS,
    SessionOutcome,
    changed_fields,
    parse_spec,
    reconcile_session,
    slim_body,
)
from orb8_operator.selectors import resolve_namespaces
from orb8_operator.writeorder import ConfigsFirst

__all__ = ["NoDiffBase", "OperatorState", "configure_settings", "state", "to_kopf_error"]

GROUP, VERSION = kube.GROUP, kube.VERSION
# orb8-operator's --session-resync / --node-config-resync set these before this module loads.
# Longest wait between looks at an active session (a safety net); report and pod changes,
# deadlines and reports turning stale are looked at when they happen.
RECONCILE_INTERVAL = float(os.environ.get("ORB8_SESSION_RESYNC_S", "300"))
RESYNC_INTERVAL = float(os.environ.get("ORB8_NODE_CONFIG_RESYNC_S", "30"))  # NodeAgentConfigs
DELETE_SETTLE_MAX_S = 30.0  # a deleted session waits this long at most for its node configs
SYNC_COALESCE_S = 0.5  # changes arriving this close together are written together
SYNC_COALESCE_MAX_S = 3.0  # ... but a long burst is written at least this often
# ... unless new sessions keep arriving: every round rewrites each node's whole config, so a
# burst of new sessions (500 applied at once) is written in one round when it pauses.
SESSION_BURST_MAX_S = 10.0
LOOP_TICK_S = 1.0  # the resync loop's clock granularity
YIELD_EVERY = 25  # sessions reconciled between yields to the event loop
STATUS_WRITES_IN_FLIGHT = 8
CONFIGS_FIRST_MAX_WAIT_S = 10.0  # a status write waits at most this long for node configs
CONFIG_ROUND_HOLD_MAX_S = 30.0  # ... and then at most this long for a round being written
SLOW_PASS_S = 1.0
# A node's state change is merged sooner than the interval, but not more often than this:
# a session spanning 50 nodes must not be written 50 times while their first reports arrive.
STATE_MERGE_GAP_S = 5.0  # passes (and node-config syncs) slower than this are logged
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
    nodes: NodeConfigCache = field(default_factory=NodeConfigCache)
    nodes_task: asyncio.Task[None] | None = None
    bodies: dict[str, tuple[SessionKind, dict[str, Any]]] = field(default_factory=dict)  # by uid
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the resync loop has work
    urgent: set[str] = field(default_factory=set)  # uids to reconcile at once
    reported: set[str] = field(default_factory=set)  # uids whose agents' reports changed
    merged_at: dict[str, float] = field(default_factory=dict)  # uid → last reconcile (monotonic)
    due: dict[str, float] = field(default_factory=dict)  # uid → next look by the clock
    resync_task: asyncio.Task[None] | None = None
    writing: set[str] = field(default_factory=set)  # uids whose status write is in flight
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # node configs are written
    write_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    startup_uids: set[str] | None = None  # sessions that existed when the operator started
    specs: dict[str, tuple[int, TraceSessionSpec | GpuTelemetrySpec | None]] = field(
        default_factory=dict
    )  # uid → (generation, parsed spec)
    merged_states: dict[str, dict[str, str]] = field(default_factory=dict)  # uid → node → state
    arrivals: int = 0  # sessions registered for the first time, ever (a counter)
    order: ConfigsFirst = field(  # node-config rounds first, status writes after
        default_factory=lambda: ConfigsFirst(
            status_writes=STATUS_WRITES_IN_FLIGHT, hold_max_s=CONFIG_ROUND_HOLD_MAX_S
        )
    )


_STATE = OperatorState()


def state() -> OperatorState:
    return _STATE


def to_kopf_error(*, err: Orb8Error) -> kopf.TemporaryError | kopf.PermanentError:
    """Retryable orb8 errors are retried by kopf; the rest stop the handler."""
    if err.retryable:
        return kopf.TemporaryError(str(err), delay=10)
    return kopf.PermanentError(str(err))


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's change detection, turned off: every object's essence is the same empty one.

    No handler here reacts to creation or spec changes (the on.event cache does),
    so the essence kopf would keep per object (a deep copy of every body per
    event, and a ``last-handled-configuration`` annotation written by one more
    PATCH per new session) served nothing. With an unchanging essence every
    event is a no-op cause to kopf; deletion still runs ``on.delete`` through
    the finalizer, which depends on the deletion timestamp only.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_settings(*, settings: kopf.OperatorSettings) -> None:
    """orb8's own prefixes, watch timeouts that notice a dead watch, bounded retries."""
    settings.persistence.finalizer = "orb8.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="orb8.io")
    settings.persistence.diffbase_storage = NoDiffBase()
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
    m.nodes_watch = st.nodes.watch
    m.pods_tracked = lambda: len(st.pods)
    m.sessions_by_kind = lambda: _count_kinds(list(st.sessions.values()))
    st.pods_task = asyncio.create_task(
        st.pods.run(api=st.api, on_change=lambda: _configs_changed(st)), name="orb8-pod-watch"
    )
    st.nodes_task = asyncio.create_task(
        st.nodes.run(api=st.api, on_change=st.wake.set), name="orb8-nodeconfig-watch"
    )
    st.sync_task = asyncio.create_task(_sync_loop(st), name="orb8-nodeconfig-sync")
    st.resync_task = asyncio.create_task(_resync_loop(st), name="orb8-session-resync")


def _count_kinds(sessions: list[ActiveSession]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for session in sessions:
        counts[session.kind] = counts.get(session.kind, 0) + 1
    return counts


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    await shutdown(st=state())


async def shutdown(*, st: OperatorState) -> None:
    """Stop the loops, end the status writes in flight, then close the API client."""
    for task in (st.resync_task, st.sync_task, st.nodes_task, st.pods_task):
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # a loop that died must not keep the operator from exiting
                _log.exception("%s had failed", task.get_name())
    # Status writes still in flight end here, before their client closes under them
    # (each would log "resync crashed: Session is closed").
    writes = list(st.write_tasks)
    for write in writes:
        write.cancel()
    await asyncio.gather(*writes, return_exceptions=True)
    if st.api is not None:
        await st.api.close()


@kopf.on.probe(id="activeSessions")
def active_sessions(**_: Any) -> int:
    return len(state().sessions)


async def sync_node_configs(*, st: OperatorState) -> None:
    """Bring every NodeAgentConfig in line with the registry of active sessions."""
    if st.api is None:
        return
    await st.nodes.ready.wait()
    started = time.monotonic()
    changed = st.pods.take_changed_namespaces()
    if changed:
        before = st.sessions
        st.sessions = refresh_targets(
            sessions=st.sessions, changed_namespaces=changed,
            pods_in=lambda sel, namespaces: list(st.pods.candidates(selector=sel,
                                                                   namespaces=namespaces)),
            node_labels=st.node_labels,
        )  # fmt: skip
        # matchedPods and the nodes list follow the pods as soon as the node configs do.
        moved = {uid for uid, s in st.sessions.items() if before.get(uid) is not s}
        if moved:
            st.urgent |= moved
            st.wake.set()
    if st.startup_uids is None:
        # Listed once: sessions that exist but were not reconciled yet keep their entries.
        st.startup_uids = await kube.list_session_uids(api=st.api)
    current = dict(st.nodes.specs)
    unreconciled = st.startup_uids - st.seen
    built = node_config_texts(sessions=st.sessions.values())
    desired: dict[str, Any] = {node: wire for node, (wire, _) in built.items()}
    texts = {node: text for node, (_, text) in built.items()}
    carriers = st.nodes.nodes_naming(uids=unreconciled) if unreconciled else set()
    carried: dict[str, set[str]] = {}
    if carriers:  # right after a start: carry their stored entries over, on those nodes
        kept = keep_unreconciled(
            desired={
                node: NodeAgentConfigSpec.model_validate(desired[node])
                for node in carriers if node in desired
            },
            current={node: current[node] for node in carriers if node in current},
            keep_uids=unreconciled,
        )  # fmt: skip
        for node, model in kept.items():
            desired[node] = to_wire(model)
            texts.pop(node, None)
            carried[node] = {session.uid for session in model.sessions}
    metrics().node_configs = len(desired)
    plan = plan_node_configs(desired=desired, current=current, desired_texts=texts)
    named: dict[str, set[str]] = {}
    for session in st.sessions.values():
        for node in session.node_entries:
            named.setdefault(node, set()).add(session.uid)
    named.update(carried)
    took = time.monotonic() - started
    if took > SLOW_PASS_S:
        _log.info("nodeagentconfig plan for %d session(s) took %.1fs", len(st.sessions), took)
    if not plan.empty:
        _log.info(
            "nodeagentconfigs: create %s, update %s, delete %s",
            sorted(plan.create),
            sorted(plan.patch),
            list(plan.delete),
        )
        async with st.order.configs():  # queued status writes wait for this round
            written = await kube.apply_node_config_plan(api=st.api, plan=plan)
        for node, spec in written.items():
            # What we wrote is what is stored; the watch confirms it a moment later.
            st.nodes.put_spec(node=node, spec=spec, uids=named.get(node, ()),
                              text=texts.get(node) if spec is not None else None)  # fmt: skip


async def coalesce(
    st: OperatorState,
    *,
    quiet_s: float = SYNC_COALESCE_S,
    max_s: float = SYNC_COALESCE_MAX_S,
    burst_max_s: float = SESSION_BURST_MAX_S,
) -> None:
    """Wait until changes pause for ``quiet_s``, but no longer than ``max_s``; while new
    sessions keep arriving, up to ``burst_max_s`` (one round of writes for a burst)."""
    began = time.monotonic()
    until = began + max_s
    while True:
        st.dirty.clear()
        arrivals = st.arrivals
        await asyncio.sleep(quiet_s)
        if not st.dirty.is_set():
            return
        now = time.monotonic()
        if st.arrivals != arrivals:
            until = max(until, min(began + burst_max_s, now + quiet_s))
        if now >= until:
            return


async def _sync_loop(st: OperatorState) -> None:
    delay = 1.0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(st.dirty.wait(), timeout=RESYNC_INTERVAL)
        await coalesce(st)  # many sessions applied at once: one round of writes
        st.dirty.clear()
        try:
            await sync_node_configs(st=st)
            metrics().node_config_sync(ok=True)
            delay = 1.0
            if not st.dirty.is_set():
                st.settled.set()
            continue
        except Orb8Error as err:
            _log.warning("nodeagentconfig sync failed, retrying in %.0fs: %s", delay, err)
        except Exception:
            # The loop must outlive any bug or transport error, or agents stop getting updates.
            _log.exception("nodeagentconfig sync crashed, retrying in %.0fs", delay)
        metrics().node_config_sync(ok=False)
        _configs_changed(st)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


# --- sessions ---------------------------------------------------------------------------


def _configs_changed(st: OperatorState) -> None:
    """The node configs must be brought in line (status writes wait for that, briefly)."""
    st.dirty.set()
    st.settled.clear()


def _register(st: OperatorState, outcome: SessionOutcome) -> None:
    st.seen.add(outcome.uid)
    before = st.sessions.get(outcome.uid)
    if before is None and outcome.active is not None:
        st.arrivals += 1
    if outcome.active is None:
        st.sessions.pop(outcome.uid, None)
    elif before != outcome.active:
        st.sessions[outcome.uid] = outcome.active
    # else: keep the equal object, and with it its serialised node entries.
    if before != outcome.active:
        _configs_changed(st)


def _spec(
    st: OperatorState, uid: str, kind: SessionKind, body: Mapping[str, Any]
) -> TraceSessionSpec | GpuTelemetrySpec | None:
    """The session's spec parsed with the models, once per generation; None when invalid."""
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    cached = st.specs.get(uid)
    if cached is not None and cached[0] == generation:
        return cached[1]
    try:
        spec: TraceSessionSpec | GpuTelemetrySpec | None = parse_spec(
            kind=kind, raw=body.get("spec")
        )
    except InvalidSpecError:
        spec = None  # reconcile_session reports it
    st.specs[uid] = (generation, spec)
    return spec


def _outcome(st: OperatorState, kind: SessionKind, body: Mapping[str, Any]) -> SessionOutcome:
    """One reconcile of ``body`` against the caches (pods, node labels, agents' reports)."""
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid", ""))
    namespace = str(meta.get("namespace", ""))
    spec = _spec(st, uid, kind, body)
    active = st.sessions.get(uid)
    targets = None
    pods: Iterable[PodEntry] = ()
    if active is not None and active.generation == int(meta.get("generation") or 0):
        targets = active.targets  # resolved for this spec; refresh_targets keeps them current
    elif spec is not None:
        # Only the pods carrying the selector's matchLabels: resolve_targets checks the rest.
        pods = st.pods.candidates(
            selector=spec.selector,
            namespaces=resolve_namespaces(selector=spec.selector, session_namespace=namespace),
        )
    reports = {
        node: entry
        for node, report in st.nodes.reports_for(uid=uid).items()
        if report.kind == kind and (entry := report.entry) is not None
    }
    started = time.perf_counter()
    outcome = reconcile_session(
        kind=kind,
        body=body,
        pods=pods,
        node_labels=st.node_labels,
        now=datetime.now(UTC),
        reports=reports,
        targets=targets,
        look_every=RECONCILE_INTERVAL,
        owner_of=st.pods.owner_of,
    )
    metrics().observe_reconcile(kind=kind, seconds=time.perf_counter() - started)
    st.merged_at[uid] = time.monotonic()
    st.merged_states[uid] = dict(outcome.node_states)
    wait = outcome.next_check_in
    st.due[uid] = math.inf if wait is None else time.monotonic() + wait
    return outcome


def _forget(uid: str) -> None:
    st = state()
    st.seen.add(uid)
    st.bodies.pop(uid, None)
    st.due.pop(uid, None)
    st.merged_at.pop(uid, None)
    st.merged_states.pop(uid, None)
    st.specs.pop(uid, None)
    if st.sessions.pop(uid, None) is not None:
        _configs_changed(st)


def _interval_of(spec: TraceSessionSpec | GpuTelemetrySpec | None) -> float:
    if isinstance(spec, TraceSessionSpec):
        return max(spec.report_interval_seconds, 1.0)
    if isinstance(spec, GpuTelemetrySpec):
        return max(spec.interval_seconds, 1.0)
    return DEFAULT_INTERVAL_SECONDS


def _pick(st: OperatorState, now: float) -> list[str]:
    """Sessions to reconcile now: urgent ones, report changes once per interval, due ones."""
    st.reported |= st.nodes.take_changed()
    picked = []
    for uid, (kind, body) in st.bodies.items():
        urgent = uid in st.urgent or st.due.get(uid, 0.0) <= now
        if not urgent and uid not in st.reported:
            continue
        since = now - st.merged_at.get(uid, 0.0)
        interval = _interval_of(_spec(st, uid, kind, body))
        if urgent or (
            since >= interval
            or (since >= min(interval, STATE_MERGE_GAP_S) and _worth_merging_early(st, uid))
        ):
            picked.append(uid)
    return picked


def _worth_merging_early(st: OperatorState, uid: str) -> bool:
    """The agents' reports moved a node's state in a way worth writing before the interval."""
    active = st.sessions.get(uid)
    return worth_merging_early(
        merged=st.merged_states.get(uid, {}),
        reported=st.nodes.states_for(uid=uid),
        targeted=() if active is None else [n for n, pods in active.targets.items() if n and pods],
    )


def _prepare(st: OperatorState, uid: str) -> tuple[SessionKind, dict[str, Any], SessionOutcome]:
    """Reconcile one session against the caches and register what the agents should serve."""
    kind, body = st.bodies[uid]
    st.urgent.discard(uid)
    st.reported.discard(uid)
    outcome = _outcome(st, kind, body)
    _register(st, outcome)  # before any await: the pod watch may refresh its targets meanwhile
    return kind, body, outcome


async def _carry_out(
    st: OperatorState, uid: str, kind: SessionKind, body: dict[str, Any], outcome: SessionOutcome
) -> None:
    """Write what one reconcile decided: the status (only what changed), Events, TTL deletion."""
    if st.api is None:
        return
    patch = changed_fields(current=body.get("status") or {}, patch=outcome.status)
    if patch:
        meta = body.get("metadata") or {}
        stored = await kube.patch_session_status(
            api=st.api, kind=kind, namespace=str(meta.get("namespace", "")),
            name=str(meta.get("name", "")), status=patch,
        )  # fmt: skip
        if stored is not None and uid in st.bodies:
            st.bodies[uid] = (kind, slim_body(body=stored))
        if "phase" in patch:
            st.urgent.add(uid)  # look again under the new phase
            st.wake.set()
    for event in outcome.events:
        await kube.post_event(
            api=st.api, body=body, type_=event.type, reason=event.reason, message=event.message
        )
    for problem in outcome.problems:
        _log.warning("%s: skipped a malformed node report: %s", uid, problem)
    if outcome.spec_error is not None and "phase" in patch:
        _log.warning("%s/%s: %s", outcome.namespace, outcome.name, outcome.spec_error)
    if outcome.delete:
        _log.info("%s: ttlSecondsAfterFinished has passed; deleting", uid)
        await kube.delete_session(
            api=st.api, kind=kind, namespace=outcome.namespace, name=outcome.name
        )


def _failed(st: OperatorState, uid: str, err: BaseException) -> None:
    if isinstance(err, Orb8Error):
        _log.warning("%s: resync failed, retrying: %s", uid, err)
        st.due[uid] = time.monotonic() + 5.0
    else:
        # The loop must outlive any bug, or every session's status freezes.
        _log.error("%s: resync crashed", uid, exc_info=err)
        st.due[uid] = time.monotonic() + 30.0


async def _resync_loop(st: OperatorState) -> None:
    """The one loop that keeps every session's status current (see the module docs).

    Each pass reconciles every picked session (registering its targets, so the
    node-config loop can write at once) and hands its status write to a
    background task, 8 in flight, none while node configs are being written
    (``st.order``); the next pass never waits for the writes, and a session
    whose write is still in flight waits for the pass after it.
    """
    await st.pods.ready.wait()
    await st.nodes.ready.wait()

    async def write(uid: str, kind: SessionKind, body: dict[str, Any], out: SessionOutcome) -> None:
        try:
            # Node configs first: agents need them to start; statuses can trail a moment.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(st.settled.wait(), timeout=CONFIGS_FIRST_MAX_WAIT_S)
            async with st.order.status():
                await _carry_out(st, uid, kind, body, out)
        except Exception as err:  # reported, retried per session
            _failed(st, uid, err)
        finally:
            st.writing.discard(uid)

    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(st.wake.wait(), timeout=LOOP_TICK_S)
        st.wake.clear()
        started = time.monotonic()
        picked = _pick(st, started)
        for count, uid in enumerate(picked, start=1):
            if uid not in st.bodies or uid in st.writing:
                continue
            try:
                kind, body, outcome = _prepare(st, uid)
            except Exception as err:  # reported, retried per session
                _failed(st, uid, err)
                continue
            st.writing.add(uid)
            task = asyncio.create_task(write(uid, kind, body, outcome))
            st.write_tasks.add(task)
            task.add_done_callback(st.write_tasks.discard)
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        took = time.monotonic() - started
        if took > SLOW_PASS_S:
            _log.info("resync pass: %d session(s) reconciled in %.1fs", len(picked), took)


def _register_kind(kind: SessionKind, plural: str) -> None:
    """Attach the body cache and the deletion handler for one session kind.

    Every change a session sees (new, spec, status) arrives here as a watch
    event; the resync loop does the rest, so kopf runs no per-session
    handler, timer or progress bookkeeping.
    """

    @kopf.on.event(GROUP, VERSION, plural, id=f"{plural}-cache")
    async def cache(*, event: Mapping[str, Any], body: kopf.Body, **kwargs: Any) -> None:
        st = state()
        meta = body.get("metadata", {})
        uid = str(meta.get("uid", ""))
        if not uid:
            return
        if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
            _forget(uid)  # being deleted: agents stop now, whatever the loop has queued
            return
        known = st.bodies.get(uid)
        st.bodies[uid] = (kind, slim_body(body=body))
        st.node_labels = _labels(kwargs["node_labels"])  # kopf passes indices by their names
        generation = meta.get("generation")
        if known is None or known[1].get("metadata", {}).get("generation") != generation:
            st.urgent.add(uid)  # new (or first seen after a restart), or its spec changed
            st.wake.set()

    @kopf.on.delete(GROUP, VERSION, plural, id=f"{plural}-forget")
    async def deleted(*, meta: Mapping[str, Any], **_: Any) -> None:
        _forget(str(meta.get("uid", "")))
        # The finalizer goes once no node config names the session any more, so a
        # `kubectl delete` that returned means the agents were told to stop (and an
        # uninstall right after it leaves no NodeAgentConfig behind). Bounded: a
        # down apiserver must not hold deletion forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state().settled.wait(), timeout=DELETE_SETTLE_MAX_S)


_register_kind("TraceSession", "tracesessions")
_register_kind("GpuTelemetry", "gputelemetries")
