"""What this node's agent must watch, read from its NodeAgentConfig spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orb8_agent.control.containers import strip_runtime_prefix
from orb8_common.durations import parse_duration

DEFAULT_REPORT_INTERVAL_S = 15.0
ALL_PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPv6")
ALL_DIRECTIONS = ("ingress", "egress")


@dataclass(frozen=True)
class TargetContainer:
    name: str
    container_id: str  # without the runtime:// prefix


@dataclass(frozen=True)
class TargetPod:
    uid: str
    namespace: str
    name: str
    ips: tuple[str, ...]
    host_network: bool
    containers: tuple[TargetContainer, ...]


@dataclass(frozen=True)
class NetworkSettings:
    directions: frozenset[str]  # pod-relative: "egress" leaves the pod
    protocols: frozenset[str]
    top_flows: int


@dataclass(frozen=True)
class SyscallSettings:
    alert_on: frozenset[str]
    learning_period_s: float
    max_alerts: int


@dataclass(frozen=True)
class SessionTarget:
    uid: str
    kind: str
    namespace: str
    name: str
    generation: int
    report_interval_s: float
    pods: tuple[TargetPod, ...]
    network: NetworkSettings | None = None
    syscalls: SyscallSettings | None = None
    gpu: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def sessions_from_spec(*, spec: Mapping[str, Any]) -> tuple[SessionTarget, ...]:
    """Parse ``NodeAgentConfig.spec.sessions`` into immutable targets."""
    return tuple(_session(raw) for raw in spec.get("sessions") or ())


def _session(raw: Mapping[str, Any]) -> SessionTarget:
    probes = raw.get("probes") or {}
    network = probes.get("network") or {}
    syscalls = probes.get("syscalls") or {}
    return SessionTarget(
        uid=raw["uid"],
        kind=raw.get("kind", "TraceSession"),
        namespace=raw["namespace"],
        name=raw["name"],
        generation=int(raw.get("generation", 0)),
        report_interval_s=_seconds(raw.get("reportInterval"), DEFAULT_REPORT_INTERVAL_S),
        pods=tuple(_pod(pod) for pod in raw.get("pods") or ()),
        network=NetworkSettings(
            directions=frozenset(network.get("directions") or ALL_DIRECTIONS),
            protocols=frozenset(network.get("protocols") or ALL_PROTOCOLS),
            top_flows=int(network.get("topFlows", 50)),
        )
        if network.get("enabled")
        else None,
        syscalls=SyscallSettings(
            alert_on=frozenset(syscalls.get("alertOn") or ()),
            learning_period_s=_seconds(syscalls.get("learningPeriod"), 0.0),
            max_alerts=int(syscalls.get("maxAlerts", 100)),
        )
        if syscalls.get("enabled")
        else None,
        gpu=raw.get("gpu") or {},
    )


def _pod(raw: Mapping[str, Any]) -> TargetPod:
    return TargetPod(
        uid=raw["uid"],
        namespace=raw["namespace"],
        name=raw["name"],
        ips=tuple(raw.get("ips") or ()),
        host_network=bool(raw.get("hostNetwork", False)),
        containers=tuple(
            TargetContainer(name=c["name"], container_id=strip_runtime_prefix(c.get("id", "")))
            for c in raw.get("containers") or ()
            if c.get("id")
        ),
    )


def _seconds(text: str | None, default: float) -> float:
    return parse_duration(text) if text else default


def all_pods(*, sessions: Sequence[SessionTarget]) -> dict[str, TargetPod]:
    """Every target pod on this node, by uid, across sessions."""
    return {pod.uid: pod for session in sessions for pod in session.pods}
