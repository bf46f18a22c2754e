"""The collector end to end against the real-protocol fakes, healthy and faulty."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from orb8_agent.gpu.alerts import AlertPolicy
from orb8_agent.gpu.collector import GpuCollector
from orb8_agent.gpu.config import GpuSettings, SourceKind
from orb8_agent.gpu.model import AlertKind, GpuSnapshot, Sharing, TargetContainer, TargetPod
from orb8_agent.gpu.nvml import NvmlSource
from orb8_dev.gpu_servers import (
    ExporterBehavior,
    FakeExporter,
    FakeKubelet,
    KubeletBehavior,
    closed_port,
    exposition,
    fake_exporter,
    fake_kubelet,
    gpu_uuid,
    refusing_socket,
)
from tests.gpu import scenarios
from tests.gpu.fake_nvml import FakeNvml, FakeNvmlDevice, FakeProc
from tests.gpu.scenarios import Scenario

T0 = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Node:
    exporter: FakeExporter
    kubelet: FakeKubelet
    scenario: Scenario
    clock: Clock

    def collector(
        self,
        *,
        source: SourceKind = "dcgmExporter",
        port: int | None = None,
        socket_path: str | None = None,
        nvml: NvmlSource | None = None,
        timeout_s: float = 2.0,
        alerts: AlertPolicy | None = None,
    ) -> GpuCollector:
        settings = GpuSettings(
            source=source,
            exporter_port=self.exporter.port if port is None else port,
            alerts=alerts or AlertPolicy(),
        )
        return GpuCollector(
            node="gpu-node-1",
            settings=settings,
            exporter_host=self.exporter.host,
            podresources_socket=socket_path or self.kubelet.socket_path,
            timeout_s=timeout_s,
            nvml=nvml
            or NvmlSource(library=FakeNvml([], init_error="NVML Shared Library Not Found")),
            clock=self.clock,
        )

    def scrape(self, collector: GpuCollector) -> GpuSnapshot:
        return asyncio.run(collector.scrape(targets=self.scenario.targets))


def start(sc: Scenario, sockdir: str, *, kubernetes_mode: bool = True) -> Iterator[Node]:
    with ExitStack() as stack:
        ex = stack.enter_context(
            fake_exporter(
                ExporterBehavior(body=exposition(sc.gpus, kubernetes_mode=kubernetes_mode))
            )
        )
        kl = stack.enter_context(
            fake_kubelet(
                sockdir, KubeletBehavior(allocations=sc.allocations, allocatable=sc.allocatable)
            )
        )
        yield Node(exporter=ex, kubelet=kl, scenario=sc, clock=Clock())


@pytest.fixture
def shared(sockdir: str) -> Iterator[Node]:
    yield from start(scenarios.time_sliced(), sockdir)


@pytest.fixture
def whole(sockdir: str) -> Iterator[Node]:
    yield from start(scenarios.whole_gpus(n=8), sockdir)


def readings(snap: GpuSnapshot) -> dict[str, tuple[float | None, datetime | None]]:
    return {r.pod: (r.gpus[0].utilization_percent, r.gpus[0].last_updated) for r in snap.rows}


def test_healthy_node_reports_every_target(shared: Node) -> None:
    snap = shared.scrape(shared.collector())
    assert (snap.source, snap.state, snap.degraded) == ("dcgmExporter", "Running", False)
    assert [s.ok for s in snap.sources] == [True, True]
    assert {r.pod: r.gpus[0].sharing for r in snap.rows} == {
        "web-a": Sharing.TIME_SLICED,
        "web-b": Sharing.TIME_SLICED,
        "web-c": Sharing.TIME_SLICED,
        "solo": Sharing.EXCLUSIVE,
    }
    assert readings(snap)["web-c"] == (72.0, T0)
    assert (snap.summary.gpus, snap.summary.pods) == (2, 4)
    status = snap.to_status()
    assert status["node"] == "gpu-node-1" and status["state"] == "Running"
    assert status["lastReportTime"] == "2026-11-29T05:00:00Z"
    assert "time-sliced between 3 pod(s)" in status["message"]
    assert len(status["pods"]) == 4 and status["alerts"] == []


def test_exporter_down_is_degraded_without_numbers(shared: Node) -> None:
    snap = shared.scrape(shared.collector(port=closed_port()))
    assert (snap.state, snap.degraded) == ("Degraded", True)
    assert "dcgmExporter: connection refused at http://127.0.0.1:" in snap.message
    # Pod-resources still says who holds which GPU; no reading is invented.
    assert readings(snap) == {p: (None, None) for p in ("web-a", "web-b", "web-c", "solo")}
    assert all(
        set(r.to_status()["gpus"][0]) == {"uuid", "model", "sharing", "migProfile"}
        for r in snap.rows
    )


def test_slow_exporter_times_out_and_does_not_block_the_loop(shared: Node) -> None:
    shared.exporter.behavior.mode = "slow"
    shared.exporter.behavior.delay_s = 10
    collector = shared.collector(timeout_s=0.5)
    ticks = 0

    async def main() -> GpuSnapshot:
        nonlocal ticks

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            return await collector.scrape(targets=shared.scenario.targets)
        finally:
            task.cancel()

    start_t = time.monotonic()
    snap = asyncio.run(main())
    assert time.monotonic() - start_t < 5  # gave up long before the exporter answered
    assert ticks >= 2  # the event loop kept running while the exporter dawdled
    assert snap.degraded
    assert "did not answer within 0.5s" in snap.message


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("garbage", "not UTF-8"),
        ("truncated-body", "closed the connection mid-response"),
        ("http-500", "answered HTTP 500"),
    ],
)
def test_broken_exporter_never_leaves_stale_numbers(shared: Node, mode: str, fragment: str) -> None:
    collector = shared.collector()
    first = shared.scrape(collector)
    assert readings(first)["web-a"] == (72.0, T0)
    shared.exporter.behavior.mode = mode
    shared.clock.now = T0 + timedelta(seconds=15)
    second = shared.scrape(collector)
    assert second.degraded and fragment in second.message
    assert readings(second)["web-a"] == (None, None)  # not the 72% of 15 s ago
    assert second.taken_at == T0 + timedelta(seconds=15)


def test_text_truncated_mid_line_is_reported(shared: Node) -> None:
    text = shared.exporter.behavior.body
    shared.exporter.behavior.body = text[: text.index("DCGM_FI_DEV_FB_USED{") + 30]
    snap = shared.scrape(shared.collector())
    assert snap.degraded and "not valid Prometheus exposition" in snap.message
    assert readings(snap)["web-a"] == (None, None)


def test_missing_socket_falls_back_to_exporter_labels(shared: Node, sockdir: str) -> None:
    missing = os.path.join(sockdir, "gone", "kubelet.sock")
    snap = shared.scrape(shared.collector(socket_path=missing))
    assert (snap.state, snap.degraded) == ("Degraded", True)
    assert f"podResources: pod-resources socket {missing} not found" in snap.message
    # Only the pod the exporter labelled is visible, with its real readings.
    assert readings(snap) == {"web-a": (72.0, T0)}


def test_refusing_socket_is_reported(shared: Node, sockdir: str) -> None:
    other = os.path.join(sockdir, "refusing")
    os.mkdir(other)
    with refusing_socket(other) as path:
        snap = shared.scrape(shared.collector(socket_path=path))
    assert snap.degraded
    assert "podResources: pod-resources List on" in snap.message and "UNAVAILABLE" in snap.message


def test_kubelet_answering_unavailable_is_reported(shared: Node) -> None:
    shared.kubelet.behavior.mode = "unavailable"
    snap = shared.scrape(shared.collector())
    assert snap.degraded and "failed (UNAVAILABLE)" in snap.message


def nvml_node() -> NvmlSource:
    return NvmlSource(
        library=FakeNvml(
            [
                FakeNvmlDevice(uuid=gpu_uuid(i), util=20 + i, procs=[FakeProc(10 + i, 100)])
                for i in range(8)
            ]
        ),
        proc_root="/nonexistent",
    )


def test_auto_uses_the_exporter_when_it_answers(whole: Node) -> None:
    snap = whole.scrape(whole.collector(source="auto", nvml=nvml_node()))
    assert snap.source == "dcgmExporter" and not snap.degraded
    assert readings(snap)["trainer-2"] == (25.0, T0)


def test_auto_falls_back_to_nvml_without_an_exporter(whole: Node) -> None:
    snap = whole.scrape(whole.collector(source="auto", port=closed_port(), nvml=nvml_node()))
    assert (snap.source, snap.state, snap.degraded) == ("nvml", "Running", False)
    assert readings(snap)["trainer-2"] == (22.0, T0)
    assert "dcgm-exporter not reachable" in snap.message


def test_auto_with_a_broken_exporter_uses_nvml_but_says_so(whole: Node) -> None:
    whole.exporter.behavior.mode = "garbage"
    snap = whole.scrape(whole.collector(source="auto", nvml=nvml_node()))
    assert (snap.source, snap.degraded) == ("nvml", True)
    assert "dcgmExporter:" in snap.message and "not UTF-8" in snap.message


def test_auto_with_neither_source_fails_with_both_reasons(whole: Node) -> None:
    snap = whole.scrape(whole.collector(source="auto", port=closed_port()))
    assert (snap.source, snap.state, snap.degraded) == ("", "Failed", True)
    assert "dcgmExporter: connection refused" in snap.message
    assert "nvml: nvmlInit failed: NVML Shared Library Not Found" in snap.message


def test_nvml_source_without_nvml_is_unavailable(whole: Node) -> None:
    snap = whole.scrape(whole.collector(source="nvml"))
    assert snap.state == "Failed"
    assert "nvml: nvmlInit failed" in snap.message


def test_alerts_come_with_the_snapshot(whole: Node) -> None:
    policy = AlertPolicy(
        idle_utilization_percent=10, idle_for=timedelta(minutes=1), memory_used_percent=5
    )
    collector = whole.collector(alerts=policy)
    # trainer-i uses (i+1) GiB of 79.6 GiB: above 5% from trainer-3 on.
    first = whole.scrape(collector).alerts
    assert {(a.pod, a.kind) for a in first} == {
        (f"trainer-{i}", AlertKind.MEMORY_HIGH) for i in range(3, 8)
    }
    whole.clock.now = T0 + timedelta(minutes=1)
    snap = whole.scrape(collector)
    idle = [a for a in snap.alerts if a.kind is AlertKind.IDLE]
    # trainer-0 runs at 5%: idle since the first scrape.
    assert [(a.pod, a.first_seen, a.value) for a in idle] == [("trainer-0", T0, 5.0)]
    assert snap.to_status()["alerts"][0]["kind"] in ("Idle", "MemoryHigh")


def test_targets_limit_rows_and_scrape_blocking_matches(whole: Node) -> None:
    collector = whole.collector()
    targets = [TargetPod("ml", "trainer-7", "", (TargetContainer("main"),))]
    snap = collector.scrape_blocking(targets=targets)
    assert [r.pod for r in snap.rows] == ["trainer-7"]
    assert snap.summary.gpus == 1


def test_auto_with_a_failing_exporter_is_degraded_even_on_nvml(whole: Node) -> None:
    whole.exporter.behavior.mode = "http-500"
    snap = whole.scrape(whole.collector(source="auto", nvml=nvml_node()))
    assert (snap.source, snap.degraded) == ("nvml", True)
    assert "answered HTTP 500" in snap.message
    assert readings(snap)["trainer-0"] == (20.0, T0)


class ExplodingNvml(FakeNvml):
    def nvmlDeviceGetCount(self) -> int:
        raise OSError("ctypes: segment of the driver went away")


def test_an_unexpected_fault_in_a_source_is_reported_not_raised(whole: Node, sockdir: str) -> None:
    collector = whole.collector(
        source="nvml",
        nvml=NvmlSource(library=ExplodingNvml([])),
        socket_path=os.path.join(sockdir, "x" * 200, "kubelet.sock"),  # ENAMETOOLONG
    )
    snap = whole.scrape(collector)
    assert snap.state == "Failed" and snap.degraded
    assert (
        "nvml: unexpected error: OSError: ctypes: segment of the driver went away" in snap.message
    )
    assert "podResources: pod-resources socket" in snap.message
