"""Totals over rows, and over status.nodes[] entries as the operator sees them."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime

from orb8_agent.gpu.collector import GpuCollector
from orb8_agent.gpu.config import GpuSettings
from orb8_agent.gpu.model import GpuPodRow, GpuSnapshot, GpuSummary
from orb8_agent.gpu.summary import summarize_nodes
from orb8_dev.gpu_servers import (
    ExporterBehavior,
    KubeletBehavior,
    exposition,
    fake_exporter,
    fake_kubelet,
)
from tests.gpu import scenarios


def test_node_entries_count_shared_gpus_once_per_node() -> None:
    sc = scenarios.time_sliced()
    with (
        tempfile.TemporaryDirectory(prefix="orb8-", dir="/tmp") as d,
        fake_exporter(ExporterBehavior(body=exposition(sc.gpus, kubernetes_mode=True))) as ex,
        fake_kubelet(
            d, KubeletBehavior(allocations=sc.allocations, allocatable=sc.allocatable)
        ) as kl,
    ):
        collector = GpuCollector(
            node="gpu-node-1",
            settings=GpuSettings(source="dcgmExporter", exporter_port=ex.port),
            podresources_socket=kl.socket_path,
        )
        snap = asyncio.run(collector.scrape(targets=sc.targets))
    entry = snap.to_status()
    other = dict(entry, node="gpu-node-2")  # the same GPU UUIDs on another node are other GPUs
    one = summarize_nodes(nodes=[entry])
    assert (one.gpus, one.pods, one.memory_used_bytes) == (
        snap.summary.gpus,
        snap.summary.pods,
        snap.summary.memory_used_bytes,
    )
    assert one.avg_utilization == snap.summary.avg_utilization == 37.5
    two = summarize_nodes(nodes=[entry, other])
    assert (two.gpus, two.pods) == (4, 4)


def test_nvml_time_sliced_shares_are_summed() -> None:
    def gpu(util: float, mem: int) -> dict[str, object]:
        return {
            "uuid": "GPU-a",
            "sharing": "time-sliced",
            "utilizationPercent": util,
            "memoryUsedBytes": mem,
        }

    entry = {
        "node": "n",
        "source": "nvml",
        "pods": [
            {"namespace": "ml", "pod": "a", "container": "c", "gpus": [gpu(30.0, 100)]},
            {"namespace": "ml", "pod": "b", "container": "c", "gpus": [gpu(45.0, 50)]},
        ],
    }
    s = summarize_nodes(nodes=[entry])
    assert (s.gpus, s.pods, s.avg_utilization, s.memory_used_bytes) == (1, 2, 75.0, 150)
    s = summarize_nodes(nodes=[dict(entry, source="dcgmExporter")])
    assert (s.avg_utilization, s.memory_used_bytes) == (30.0, 100)
    assert summarize_nodes(nodes=[]).avg_utilization is None


def test_status_entry_is_bounded_and_says_so() -> None:
    rows = tuple(GpuPodRow("ml", f"p{i}", "main", "n", ()) for i in range(300))
    snap = GpuSnapshot(
        node="n",
        taken_at=datetime(2026, 11, 29, tzinfo=UTC),
        source="dcgmExporter",
        rows=rows,
        alerts=(),
        summary=GpuSummary(gpus=0, pods=300, avg_utilization=None, memory_used_bytes=0),
        sources=(),
    )
    status = snap.to_status()
    assert len(status["pods"]) == 256
    assert status["message"] == "44 container row(s) left out (limit 256)"
