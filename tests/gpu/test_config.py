"""Session settings from NodeAgentConfig, and durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orb8_agent.gpu.config import parse_duration, settings_from_spec, targets_from_spec
from orb8_common.errors import InvalidSpecError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), ("2m30s", 150)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "1..5s", "-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidSpecError):
        parse_duration(text)


def test_settings_from_a_dcgm_session() -> None:
    s = settings_from_spec(
        gpu={
            "source": {"dcgmExporter": {"port": 9500, "path": "/m"}},
            "interval": "30s",
            "alerts": {"idleUtilizationPercent": 5, "idleFor": "15m", "memoryUsedPercent": 90},
        }
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
    assert settings_from_spec(gpu={"source": {"nvml": {}}}).source == "nvml"
    auto = settings_from_spec(gpu={"source": {}})
    assert (auto.source, auto.exporter_port, auto.exporter_path, auto.interval) == (
        "auto",
        9400,
        "/metrics",
        timedelta(seconds=15),
    )
    assert auto.alerts.idle_utilization_percent is None
    assert settings_from_spec(gpu=None).source == "auto"


@pytest.mark.parametrize(
    "gpu",
    [
        {"source": {"dcgmExporter": {}, "nvml": {}}},
        {"source": {"dcgmExporter": {"port": 0}}},
        {"interval": "500ms"},
        {"alerts": {"memoryUsedPercent": "lots"}},
    ],
)
def test_bad_settings_are_invalid_spec(gpu: dict[str, object]) -> None:
    with pytest.raises(InvalidSpecError):
        settings_from_spec(gpu=gpu)


def test_targets_from_spec() -> None:
    (t,) = targets_from_spec(
        pods=[
            {
                "uid": "u-1",
                "namespace": "ml",
                "name": "trainer-0",
                "ips": ["10.0.0.5"],
                "containers": [{"name": "main", "id": "containerd://" + "a" * 64}],
            }
        ]
    )
    assert (t.namespace, t.name, t.uid) == ("ml", "trainer-0", "u-1")
    assert t.containers[0].bare_id == "a" * 64
