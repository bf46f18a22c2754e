"""Prometheus exposition of the latest snapshots."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orb8_agent.gpu.metrics import GpuMetrics
from orb8_agent.gpu.model import (
    EMPTY_SUMMARY,
    GpuPodRow,
    GpuSnapshot,
    GpuUse,
    Sharing,
    SourceHealth,
)

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


def use(
    uuid: str, util: float | None, mem: int, *, scope: str = "device", fresh: bool = True
) -> GpuUse:
    return GpuUse(
        uuid=uuid,
        index=0,
        model="H100",
        sharing=Sharing.TIME_SLICED if scope == "process" else Sharing.EXCLUSIVE,
        utilization_percent=util,
        memory_used_bytes=mem,
        memory_total_bytes=80 * 2**30,
        temperature_celsius=60.0,
        power_watts=300.5,
        last_updated=NOW if fresh else None,
        scope="process" if scope == "process" else "device",
    )


def snap(rows: list[GpuPodRow], ok: bool = True) -> GpuSnapshot:
    return GpuSnapshot(
        node="n",
        taken_at=NOW,
        source="dcgmExporter",
        rows=tuple(rows),
        alerts=(),
        summary=EMPTY_SUMMARY,
        sources=(
            SourceHealth(name="dcgmExporter", ok=ok),
            SourceHealth(name="podResources", ok=True),
        ),
    )


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if s.name.startswith("orb8_gpu_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def key(name: str, ns: str, pod: str, gpu: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("gpu", gpu), ("namespace", ns), ("pod", pod)))


def test_metrics_follow_the_latest_snapshot() -> None:
    registry = CollectorRegistry()
    m = GpuMetrics()
    registry.register(m)
    m.publish(
        session="s1",
        snapshot=snap(
            [
                GpuPodRow("ml", "a", "main", "n", (use("GPU-1", 87.0, 2**30),)),
                GpuPodRow("ml", "b", "main", "n", (use("GPU-2", None, 5, fresh=False),)),
            ]
        ),
    )
    got = scrape(registry)
    assert got[key("orb8_gpu_utilization_ratio", "ml", "a", "GPU-1")] == 0.87
    assert got[key("orb8_gpu_memory_used_bytes", "ml", "a", "GPU-1")] == 2**30
    assert got[key("orb8_gpu_temperature_celsius", "ml", "a", "GPU-1")] == 60.0
    assert got[key("orb8_gpu_power_watts", "ml", "a", "GPU-1")] == 300.5
    assert got[("orb8_gpu_source_up", (("source", "dcgmExporter"),))] == 1.0
    # Rows without fresh readings export nothing.
    assert not any(k[1] and ("pod", "b") in k[1] for k in got)

    m.publish(session="s1", snapshot=snap([], ok=False))
    got = scrape(registry)
    assert not any(k[0] == "orb8_gpu_utilization_ratio" for k in got)  # the pod vanished
    assert got[("orb8_gpu_source_up", (("source", "dcgmExporter"),))] == 0.0

    m.forget(session="s1")
    assert scrape(registry) == {}


def test_containers_of_one_pod_on_one_gpu_are_summed_when_measured_per_process() -> None:
    registry = CollectorRegistry()
    m = GpuMetrics()
    registry.register(m)
    rows = [
        GpuPodRow("ml", "a", "c1", "n", (use("GPU-1", 30.0, 100, scope="process"),)),
        GpuPodRow("ml", "a", "c2", "n", (use("GPU-1", 15.0, 50, scope="process"),)),
    ]
    m.publish(session="s1", snapshot=snap(rows))
    m.publish(session="s2", snapshot=snap(rows))  # the same pod in a second session counts once
    got = scrape(registry)
    assert got[key("orb8_gpu_utilization_ratio", "ml", "a", "GPU-1")] == 0.45
    assert got[key("orb8_gpu_memory_used_bytes", "ml", "a", "GPU-1")] == 150


def test_pods_beyond_the_cap_fold_into_other_per_gpu_and_are_counted() -> None:
    registry = CollectorRegistry()
    m = GpuMetrics(max_pods=1)
    registry.register(m)
    rows = [
        GpuPodRow("ml", "big", "main", "n", (use("GPU-1", 90.0, 3000),)),
        GpuPodRow("ml", "web-a", "main", "n", (use("GPU-2", 20.0, 100, scope="process"),)),
        GpuPodRow("ml", "web-b", "main", "n", (use("GPU-2", 35.0, 200, scope="process"),)),
    ]
    m.publish(session="s1", snapshot=snap(rows))
    got = scrape(registry)
    assert got[key("orb8_gpu_memory_used_bytes", "ml", "big", "GPU-1")] == 3000
    # the two sharers of GPU-2 become one _other series: memory summed, utilisation the highest
    assert got[key("orb8_gpu_memory_used_bytes", "_other", "_other", "GPU-2")] == 300
    assert got[key("orb8_gpu_utilization_ratio", "_other", "_other", "GPU-2")] == 0.35
    pods = {dict(k[1]).get("pod") for k in got if k[0] == "orb8_gpu_memory_used_bytes"}
    assert pods == {"big", "_other"}
    assert m.capped_total == 2
    scrape(registry)
    assert m.capped_total == 2  # the same pods folded again are not counted again
