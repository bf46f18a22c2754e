"""Each served session's settings, read from the session object once per generation.

NodeAgentConfig lists only who each session is and this node's pods; the
settings (probes, intervals, GPU source) live once, in the session's own
spec. The agent reads a session when a new uid or generation appears in its
config, parses the spec with the orb8_common models, and keeps it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kubernetes_asyncio.client import CustomObjectsApi

from orb8_agent.control.kube import read_session_spec
from orb8_agent.control.served import Served
from orb8_common.crd import TRACE_SESSION
from orb8_common.errors import Orb8Error
from orb8_common.models import (
    AgentSession,
    GpuTelemetrySpec,
    TraceSessionSpec,
    parse_gpu_telemetry_spec,
    parse_trace_session_spec,
)

log = logging.getLogger(__name__)
READS_IN_FLIGHT = 8

Spec = TraceSessionSpec | GpuTelemetrySpec


class SessionSettings:
    def __init__(self, *, api: CustomObjectsApi) -> None:
        self._api = api
        self._known: dict[str, tuple[int, Spec]] = {}  # uid → (generation, spec)
        self.incomplete = False  # some session's settings could not be read yet

    async def resolve(self, *, sessions: Sequence[AgentSession]) -> tuple[Served, ...]:
        """The sessions whose settings are known, reading the new ones first."""
        missing = [s for s in sessions if self._current(s) is None]
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
            try:
                spec: Spec = (
                    parse_trace_session_spec(found["spec"])
                    if session.kind == TRACE_SESSION
                    else parse_gpu_telemetry_spec(found["spec"])
                )
            except Orb8Error as err:
                log.warning("%s/%s: %s", session.namespace, session.name, err)
                return
            self._known[session.uid] = (int(found["generation"] or 0), spec)

        await asyncio.gather(*(read(s) for s in missing))
        self.incomplete = failed
        wanted = {s.uid for s in sessions}
        for uid in set(self._known) - wanted:
            del self._known[uid]
        served = []
        for session in sessions:
            spec = self._current(session)
            if spec is not None:
                served.append(Served(session=session, spec=spec))
        return tuple(served)

    def _current(self, session: AgentSession) -> Spec | None:
        known = self._known.get(session.uid)
        if known is None or known[0] < session.generation:
            return None
        return known[1]
