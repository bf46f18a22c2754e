"""Each served session's settings, read from the session object once per generation.

NodeAgentConfig lists only who each session is and this node's pods; the
settings (probes, intervals, GPU source) live once, in the session's own
spec. The agent reads a session when a new uid or generation appears in its
config, parses the spec with the orb8_common models, and keeps it.

A spec the models refuse (admission and the operator refuse such specs first;
this agent may be newer or older than they are) is not served: it is kept as
:class:`Unreadable`, not read again until its generation moves, and reported
as the session's node entry, Failed with the refused field named
(:func:`unreadable_report`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from kubernetes_asyncio.client import CustomObjectsApi

from orb8_agent.control.kube import read_session_spec
from orb8_agent.control.served import Served
from orb8_common.crd import TRACE_SESSION
from orb8_common.errors import Orb8Error
from orb8_common.models import (
    AgentSession,
    GpuNodeEntry,
    GpuTelemetrySpec,
    NodeEntry,
    SessionReport,
    TraceSessionSpec,
    format_epoch,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
)

log = logging.getLogger(__name__)
READS_IN_FLIGHT = 8

Spec = TraceSessionSpec | GpuTelemetrySpec
MESSAGE_CHARS = 1024  # as a served session's node entry message


@dataclass(frozen=True)
class Unreadable:
    """A session in this node's config whose spec the models refuse."""

    session: AgentSession
    generation: int  # of the session object that was read
    error: str  # the models' one line, naming the field: "spec.interval: ..."


def unreadable_report(*, node: str, unreadable: Unreadable, now: float) -> SessionReport:
    """The session's node entry: Failed (nothing of it runs here), naming the field."""
    session = unreadable.session
    message = f"spec not served by this agent: {unreadable.error}"[:MESSAGE_CHARS]
    common = {"node": node, "state": "Failed", "message": message,
              "lastReportTime": format_epoch(now)}  # fmt: skip
    trace = gpu = None
    if session.kind == TRACE_SESSION:
        trace = NodeEntry.model_validate(common)
    else:
        gpu = GpuNodeEntry.model_validate(common)
    return SessionReport(
        uid=session.uid, kind=session.kind, namespace=session.namespace, name=session.name,
        generation=session.generation, trace=trace, gpu=gpu,
    )  # fmt: skip


class SessionSettings:
    def __init__(self, *, api: CustomObjectsApi) -> None:
        self._api = api
        self._known: dict[str, tuple[int, Spec]] = {}  # uid → (generation, spec)
        self._unreadable: dict[str, Unreadable] = {}  # uid → the refused spec's session
        self.incomplete = False  # some session's settings could not be read yet

    async def resolve(self, *, sessions: Sequence[AgentSession]) -> tuple[Served, ...]:
        """The sessions whose settings are known, reading the new ones first."""
        missing = [s for s in sessions if self._current(s) is None and not self._refused(s)]
        limit = asyncio.Semaphore(READS_IN_FLIGHT)
        failed = False

        async def read(session: AgentSession) -> None:
            nonlocal failed
            async with limit:
                try:
                    found = await read_session_spec(
                        api=self._api, kind=session.kind,
                        namespace=session.namespace, name=session.name,
                    )  # fmt: skip
                except Orb8Error as err:
                    log.warning("settings of %s/%s: %s", session.namespace, session.name, err)
                    failed = True
                    return
            if found is None or found["uid"] != session.uid:
                return  # deleted (or replaced); the operator drops it from the config
            generation = int(found["generation"] or 0)
            try:
                spec: Spec = (
                    parse_trace_session_spec(found["spec"])
                    if session.kind == TRACE_SESSION
                    else parse_gpu_telemetry_spec(found["spec"])
                )
            except Orb8Error as err:
                log.warning("%s/%s not served: %s", session.namespace, session.name, err)
                self._unreadable[session.uid] = Unreadable(session, generation, str(err))
                return
            self._unreadable.pop(session.uid, None)
            self._known[session.uid] = (generation, spec)

        await asyncio.gather(*(read(s) for s in missing))
        self.incomplete = failed
        wanted = {s.uid: s for s in sessions}
        for uid in set(self._known) - set(wanted):
            del self._known[uid]
        for uid in list(self._unreadable):
            session = wanted.get(uid)
            if session is None or self._current(session) is not None:
                del self._unreadable[uid]
            else:  # this node's current view of it (its pods, its generation)
                old = self._unreadable[uid]
                self._unreadable[uid] = Unreadable(session, old.generation, old.error)
        served = []
        for session in sessions:
            spec = self._current(session)
            if spec is not None:
                served.append(Served(session=session, spec=spec))
        return tuple(served)

    def unreadable(self) -> list[Unreadable]:
        """The sessions of the last ``resolve`` whose spec the models refused."""
        return list(self._unreadable.values())

    def _refused(self, session: AgentSession) -> bool:
        """Whether this generation's spec was read and refused (not worth reading again)."""
        known = self._unreadable.get(session.uid)
        return known is not None and known.generation >= session.generation

    def _current(self, session: AgentSession) -> Spec | None:
        known = self._known.get(session.uid)
        if known is None or known[0] < session.generation:
            return None
        return known[1]
