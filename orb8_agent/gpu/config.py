"""Read a GpuTelemetry session's settings out of NodeAgentConfig.spec.sessions[]."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from orb8_agent.gpu.alerts import AlertPolicy
from orb8_agent.gpu.exporter import DEFAULT_PATH, DEFAULT_PORT
from orb8_agent.gpu.model import TargetContainer, TargetPod
from orb8_common.durations import parse_duration as parse_seconds
from orb8_common.errors import InvalidSpecError

SourceKind = Literal["auto", "dcgmExporter", "nvml"]


def parse_duration(text: str) -> timedelta:
    """Go-style durations as the CRDs accept them: 90s, 10m, 1h30m, 1.5h."""
    seconds = parse_seconds(text)
    if seconds < 0:
        raise InvalidSpecError(f"duration {text!r} must not be negative")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class GpuSettings:
    source: SourceKind = "auto"
    exporter_port: int = DEFAULT_PORT
    exporter_path: str = DEFAULT_PATH
    interval: timedelta = timedelta(seconds=15)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)


def _num(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpecError(f"{name} must be a number, got {value!r}")
    return float(value)


def settings_from_spec(*, gpu: Mapping[str, Any] | None) -> GpuSettings:
    """Settings from a session's `gpu` block; missing fields take the CRD defaults."""
    gpu = gpu or {}
    source = gpu.get("source") or {}
    kind: SourceKind = "auto"
    port, path = DEFAULT_PORT, DEFAULT_PATH
    if "dcgmExporter" in source and "nvml" in source:
        raise InvalidSpecError("gpu.source: at most one of dcgmExporter or nvml may be set")
    if "dcgmExporter" in source:
        kind = "dcgmExporter"
        exp = source.get("dcgmExporter") or {}
        port = int(exp.get("port", DEFAULT_PORT))
        path = str(exp.get("path", DEFAULT_PATH))
        if not 1 <= port <= 65535 or not path.startswith("/"):
            raise InvalidSpecError(f"gpu.source.dcgmExporter: bad port {port} or path {path!r}")
    elif "nvml" in source:
        kind = "nvml"
    interval = parse_duration(str(gpu.get("interval", "15s")))
    if interval < timedelta(seconds=1):
        raise InvalidSpecError("gpu.interval must be at least 1s")
    a = gpu.get("alerts") or {}
    policy = AlertPolicy(
        idle_utilization_percent=_num(a.get("idleUtilizationPercent"), "idleUtilizationPercent"),
        idle_for=parse_duration(str(a.get("idleFor", "10m"))),
        memory_used_percent=_num(a.get("memoryUsedPercent"), "memoryUsedPercent"),
    )
    return GpuSettings(
        source=kind, exporter_port=port, exporter_path=path, interval=interval, alerts=policy
    )


def targets_from_spec(*, pods: Any) -> list[TargetPod]:
    """Target pods from a session's `pods` list."""
    out: list[TargetPod] = []
    for p in pods or []:
        containers = tuple(
            TargetContainer(name=str(c.get("name", "")), id=str(c.get("id", "") or ""))
            for c in p.get("containers") or []
        )
        out.append(
            TargetPod(
                namespace=str(p["namespace"]),
                name=str(p["name"]),
                uid=str(p.get("uid", "") or ""),
                containers=containers,
            )
        )
    return out
