"""Collector settings come from the GpuTelemetry spec as the models parse it (one contract)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orb8_agent.gpu.config import gpu_settings
from orb8_common.errors import InvalidSpecError
from orb8_common.models import parse_gpu_telemetry_spec


def test_settings_from_a_dcgm_session() -> None:
    s = gpu_settings(
        spec=parse_gpu_telemetry_spec(
            {
                "source": {"dcgmExporter": {"port": 9500, "path": "/m"}},
                "interval": "30s",
                "alerts": {"idleUtilizationPercent": 5, "idleFor": "15m", "memoryUsedPercent": 90},
            }
        )
    )
    assert (s.source, s.exporter_port, s.exporter_path, s.interval) == (
        "dcgmExporter",
        9500,
        "/m",
        timedelta(seconds=30),
    )
    assert s.alerts.idle_utilization_percent == 5.0
    assert s.alerts.idle_for == timedelta(minutes=15)
    assert s.alerts.memory_used_percent == 90.0


def test_settings_defaults_nvml_and_auto() -> None:
    assert gpu_settings(spec=parse_gpu_telemetry_spec({"source": {"nvml": {}}})).source == "nvml"
    auto = gpu_settings(spec=parse_gpu_telemetry_spec({}))
    assert (auto.source, auto.exporter_port, auto.exporter_path, auto.interval) == (
        "auto",
        9400,
        "/metrics",
        timedelta(seconds=15),
    )
    assert auto.alerts.idle_utilization_percent is None
    assert auto.alerts.idle_for == timedelta(minutes=10)  # the models' default


@pytest.mark.parametrize(
    "spec",
    [
        {"source": {"dcgmExporter": {}, "nvml": {}}},
        {"source": {"dcgmExporter": {"port": 0}}},
        {"interval": "500ms"},
        {"alerts": {"memoryUsedPercent": "lots"}},
    ],
)
def test_bad_settings_are_invalid_spec(spec: dict[str, object]) -> None:
    with pytest.raises(InvalidSpecError):
        parse_gpu_telemetry_spec(spec)
