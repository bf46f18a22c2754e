"""A GpuTelemetry session's collector settings, from its spec as the models parse it.

No parsing happens here: :class:`orb8_common.models.GpuTelemetrySpec` is the
one reader of the spec (and owns its defaults); this only picks out what a
collector needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from orb8_agent.gpu.alerts import AlertPolicy
from orb8_agent.gpu.exporter import DEFAULT_PATH, DEFAULT_PORT
from orb8_common.models import DcgmExporterSource, GpuTelemetrySpec

SourceKind = Literal["auto", "dcgmExporter", "nvml"]


@dataclass(frozen=True, slots=True)
class GpuSettings:
    source: SourceKind = "auto"
    exporter_port: int = DEFAULT_PORT
    exporter_path: str = DEFAULT_PATH
    interval: timedelta = timedelta(seconds=15)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)


def gpu_settings(*, spec: GpuTelemetrySpec) -> GpuSettings:
    """What one session's collector needs, from the session's parsed spec."""
    exporter = spec.source.dcgm_exporter or DcgmExporterSource()
    alerts = spec.alerts
    return GpuSettings(
        source=spec.source.kind,
        exporter_port=exporter.port,
        exporter_path=exporter.path,
        interval=timedelta(seconds=spec.interval_seconds),
        alerts=AlertPolicy(
            idle_utilization_percent=_float(alerts.idle_utilization_percent),
            idle_for=timedelta(seconds=alerts.idle_for_seconds),
            memory_used_percent=_float(alerts.memory_used_percent),
        ),
    )


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)
