"""A session this node's agent serves: its NodeAgentConfig entry plus the
session's own spec, both parsed by the orb8_common models (the one contract).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orb8_agent.control.containers import strip_runtime_prefix
from orb8_common.crd import GPU_TELEMETRY, TRACE_SESSION
from orb8_common.models import (
    AgentPod,
    AgentSession,
    DnsProbe,
    GpuTelemetrySpec,
    NetworkProbe,
    SyscallProbe,
    TraceSessionSpec,
)


@dataclass(frozen=True)
class Served:
    """One session on this node: who (``session``, with this node's pods) and how (``spec``)."""

    session: AgentSession
    spec: TraceSessionSpec | GpuTelemetrySpec

    @property
    def uid(self) -> str:
        return self.session.uid

    @property
    def kind(self) -> str:
        return self.session.kind

    @property
    def namespace(self) -> str:
        return self.session.namespace

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def generation(self) -> int:
        return self.session.generation

    @property
    def pods(self) -> tuple[AgentPod, ...]:
        return self.session.pods

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def trace(self) -> TraceSessionSpec | None:
        return self.spec if isinstance(self.spec, TraceSessionSpec) else None

    @property
    def gpu(self) -> GpuTelemetrySpec | None:
        return self.spec if isinstance(self.spec, GpuTelemetrySpec) else None

    @property
    def network(self) -> NetworkProbe | None:
        """The network probe's settings when it is enabled for this session."""
        trace = self.trace
        return trace.probes.network if trace and trace.probes.network.enabled else None

    @property
    def syscalls(self) -> SyscallProbe | None:
        trace = self.trace
        return trace.probes.syscalls if trace and trace.probes.syscalls.enabled else None

    @property
    def dns(self) -> DnsProbe | None:
        """The DNS probe's settings when it is enabled for this session."""
        trace = self.trace
        return trace.probes.dns if trace and trace.probes.dns.enabled else None

    @property
    def report_interval_s(self) -> float:
        if isinstance(self.spec, TraceSessionSpec):
            return self.spec.report_interval_seconds
        return self.spec.interval_seconds


def container_ids(*, pod: AgentPod) -> list[tuple[str, str]]:
    """(container name, id without the runtime:// prefix) of the pod's started containers."""
    return [(c.name, strip_runtime_prefix(c.id)) for c in pod.containers if c.id]


def all_pods(*, sessions: Sequence[Served]) -> dict[str, AgentPod]:
    """Every target pod on this node, by uid, across sessions."""
    return {pod.uid: pod for session in sessions for pod in session.pods}


__all__ = ["GPU_TELEMETRY", "TRACE_SESSION", "Served", "all_pods", "container_ids"]
