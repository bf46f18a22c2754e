"""GPU rows when one source fails part-way: nothing claims more than is known.

Each case runs the collector against the real-protocol servers
(orb8_dev.gpu_servers: dcgm-exporter's text over HTTP, the kubelet's
pod-resources v1 over gRPC on a unix socket) with one fault injected, and
checks the rows, the node's state and message, and the summaries the agent
and the operator compute from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest

from orb8_agent.gpu.alerts import AlertPolicy
from orb8_agent.gpu.collector import GpuCollector
from orb8_agent.gpu.config import GpuSettings
from orb8_agent.gpu.model import GpuSnapshot, Sharing
from orb8_agent.gpu.nvml import NvmlSource
from orb8_common.models import GpuNodeEntry, to_wire
from orb8_dev.gpu_servers import (
    A100,
    Allocation,
    ExporterBehavior,
    FakeGpu,
    FakeMig,
    KubeletBehavior,
    Pod,
    exposition,
    fake_exporter,
    fake_kubelet,
    gpu_uuid,
    mig_uuid,
)
from orb8_operator.status import gpu_status
from tests.gpu import scenarios
from tests.gpu.fake_nvml import FakeNvml
from tests.gpu.scenarios import Scenario, target

T0 = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)


class Node:
    def __init__(self, stack: ExitStack, sc: Scenario, sockdir: str, **kubelet: Any) -> None:
        self.scenario = sc
        self.exporter = stack.enter_context(
            fake_exporter(ExporterBehavior(body=exposition(sc.gpus, kubernetes_mode=True)))
        )
        self.kubelet = stack.enter_context(
            fake_kubelet(
                sockdir,
                KubeletBehavior(allocations=sc.allocations, allocatable=sc.allocatable, **kubelet),
            )
        )

    def scrape(self) -> GpuSnapshot:
        collector = GpuCollector(
            node="gpu-node-1",
            settings=GpuSettings(
                source="dcgmExporter", exporter_port=self.exporter.port, alerts=AlertPolicy()
            ),
            exporter_host=self.exporter.host,
            podresources_socket=self.kubelet.socket_path,
            timeout_s=5.0,
            nvml=NvmlSource(library=FakeNvml([], init_error="NVML Shared Library Not Found")),
            clock=lambda: T0,
        )
        return asyncio.run(collector.scrape(targets=self.scenario.targets))


@pytest.fixture
def node_with(sockdir: str) -> Iterator[Any]:
    with ExitStack() as stack:

        def make(sc: Scenario, **kubelet: Any) -> Node:
            return Node(stack, sc, sockdir, **kubelet)

        yield make


def operator_merge(snap: GpuSnapshot) -> dict[str, Any]:
    """What the operator makes of this node's entry (wire -> model -> merged status)."""
    entry = GpuNodeEntry.model_validate(snap.to_status())
    merged = gpu_status(nodes=[entry])
    return to_wire(merged.summary)


def test_failed_list_does_not_claim_exclusive_and_says_attribution_is_partial(
    node_with: Any,
) -> None:
    """A time-sliced GPU shared by three pods, dcgm-exporter in Kubernetes mode
    (it labels only web-a), and pod-resources List failing."""
    node = node_with(scenarios.time_sliced(kubernetes_mode=True), list_status="INTERNAL")
    snap = node.scrape()
    sharing = {r.pod: r.gpus[0].sharing for r in snap.rows}
    assert sharing["web-a"] is Sharing.UNKNOWN  # one label does not prove exclusive use
    assert Sharing.EXCLUSIVE not in sharing.values()
    assert {r.to_status()["gpus"][0]["sharing"] for r in snap.rows} == {"unknown"}
    assert snap.state == "Degraded"
    assert "List" in snap.message and "INTERNAL" in snap.message
    assert "attribution is partial" in snap.message
    # The status row validates against the wire model (and the CRD enum).
    GpuNodeEntry.model_validate(snap.to_status())


def test_failed_allocatable_keeps_every_row_from_list(node_with: Any) -> None:
    node = node_with(scenarios.time_sliced(kubernetes_mode=True), allocatable_status="INTERNAL")
    snap = node.scrape()
    assert {r.pod for r in snap.rows} == {"web-a", "web-b", "web-c", "solo"}
    sharing = {r.pod: r.gpus[0].sharing for r in snap.rows}
    assert sharing == {
        "web-a": Sharing.TIME_SLICED,
        "web-b": Sharing.TIME_SLICED,
        "web-c": Sharing.TIME_SLICED,
        "solo": Sharing.EXCLUSIVE,
    }
    assert all(r.gpus[0].utilization_percent is not None for r in snap.rows)
    assert snap.state == "Degraded"
    assert "GetAllocatableResources" in snap.message and "INTERNAL" in snap.message


def two_mig_gpus() -> Scenario:
    """Two A100s in MIG mode, two 3g.40gb instances each, each used by one pod
    that dcgm-exporter labels (Kubernetes mode)."""
    gpus, allocations, allocatable, targets = [], [], [], []
    for i in range(2):
        instances = []
        for gi, util in ((1, 0.8), (2, 0.2)):
            pod = Pod("ml", f"mig-{i}-{gi}", "main")
            instances.append(
                FakeMig(
                    gi_id=gi,
                    profile="3g.40gb",
                    fb_used_mib=1000 * (i + gi),
                    fb_free_mib=40000,
                    gr_active=util,
                    pods=[pod],
                )
            )
            resource = "nvidia.com/mig-3g.40gb"
            allocations.append(Allocation("ml", pod.pod, "main", resource, [mig_uuid(i, gi)]))
            allocatable.append((resource, mig_uuid(i, gi)))
            targets.append(target("ml", pod.pod))
        gpus.append(
            FakeGpu(
                index=i,
                model=A100,
                util=None,
                fb_used_mib=None,
                fb_free_mib=None,
                temp=50,
                power=200.0,
                mig=instances,
            )
        )
    return Scenario(gpus=gpus, allocations=allocations, allocatable=allocatable, targets=targets)


def test_mig_rows_without_pod_resources_are_distinct_devices(node_with: Any) -> None:
    node = node_with(two_mig_gpus(), list_status="UNAVAILABLE")
    snap = node.scrape()
    uuids = [r.gpus[0].uuid for r in snap.rows]
    assert len(snap.rows) == 4 and len(set(uuids)) == 4
    assert set(uuids) == {f"MIG-{gpu_uuid(i)}/{gi}" for i in range(2) for gi in (1, 2)}
    assert all(r.gpus[0].sharing is Sharing.MIG for r in snap.rows)
    assert snap.summary.gpus == 4
    summary = operator_merge(snap)
    assert summary["gpus"] == 4 and summary["pods"] == 4
    # The mean over the four instances' own GR_ENGINE_ACTIVE: (80+20+80+20)/4.
    assert summary["avgUtilization"] == pytest.approx(50.0)
    assert summary["memoryUsedBytes"] == sum(1000 * (i + gi) for i in range(2) for gi in (1, 2)) * (
        2**20
    )


def test_mig_rows_with_pod_resources_keep_their_mig_uuids(node_with: Any) -> None:
    snap = node_with(two_mig_gpus()).scrape()
    assert {r.gpus[0].uuid for r in snap.rows} == {
        mig_uuid(i, gi) for i in range(2) for gi in (1, 2)
    }
    assert operator_merge(snap)["gpus"] == 4


def test_samples_without_a_uuid_label_make_the_node_degraded_and_say_so(node_with: Any) -> None:
    node = node_with(scenarios.whole_gpus(n=2))
    body = node.exporter.behavior.body
    lines = body.splitlines()
    # Drop the UUID label from trainer-1's utilization line.
    uuid1 = gpu_uuid(1)
    for i, line in enumerate(lines):
        if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and uuid1 in line:
            lines[i] = line.replace(f'UUID="{uuid1}",', "")
            break
    else:
        raise AssertionError("no utilization line for GPU 1")
    node.exporter.behavior.body = "\n".join(lines) + "\n"
    snap = node.scrape()
    assert snap.state == "Degraded"
    assert "1 DCGM_FI_DEV_GPU_UTIL sample(s) without a UUID label" in snap.message
    rows = {r.pod: r for r in snap.rows}
    assert rows["trainer-1"].gpus[0].utilization_percent is None
    assert rows["trainer-0"].gpus[0].utilization_percent == 5.0


def test_a_whole_scrape_is_healthy_with_an_empty_message(node_with: Any) -> None:
    snap = node_with(scenarios.whole_gpus(n=2)).scrape()
    assert (snap.state, snap.message) == ("Running", "")


def test_failed_scrape_leaves_memory_out_of_both_summaries(node_with: Any) -> None:
    node = node_with(scenarios.whole_gpus(n=2))
    node.exporter.behavior.mode = "http-500"
    snap = node.scrape()
    assert snap.state == "Degraded"
    assert snap.summary.memory_used_bytes is None
    assert "memoryUsedBytes" not in snap.summary.to_status()
    summary = operator_merge(snap)
    assert summary["gpus"] == 2
    assert "memoryUsedBytes" not in summary and "avgUtilization" not in summary
