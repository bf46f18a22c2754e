"""GpuTelemetry end to end: operator → agent → dcgm-exporter + pod-resources → status.

The exporter and the kubelet's pod-resources service are test servers that
speak the real protocols (Prometheus text on HTTP, gRPC on a unix socket).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orb8_dev.controlplane import ControlPlane
from orb8_dev.gpu_servers import (
    A100,
    Allocation,
    ExporterBehavior,
    FakeGpu,
    FakeMig,
    KubeletBehavior,
    closed_port,
    exposition,
    fake_exporter,
    fake_kubelet,
    gpu_uuid,
    mig_uuid,
)
from orb8_dev.kubelet import SimKubelet
from tests.e2e.conftest import get_json, wait_for

GPU = "nvidia.com/gpu"
ML = {"team": "ml"}


def _scenario(namespace: str) -> tuple[list[FakeGpu], KubeletBehavior]:
    gpus = [
        FakeGpu(index=0, util=87, fb_used_mib=60000, fb_free_mib=21559),  # trainer, exclusive
        FakeGpu(index=1, util=3, fb_used_mib=500, fb_free_mib=81059),  # shared by three web pods
        FakeGpu(
            index=2, model=A100, util=None, fb_used_mib=None, fb_free_mib=None, temp=55,
            power=250.5,
            mig=[FakeMig(gi_id=1, profile="3g.40gb", fb_used_mib=20000, fb_free_mib=20096,
                         gr_active=0.8125),
                 FakeMig(gi_id=5, profile="2g.20gb", fb_used_mib=3000, fb_free_mib=16968,
                         gr_active=0.25)],
        ),
        FakeGpu(index=3, util=50),  # the outsider's
    ]  # fmt: skip
    allocations = [
        Allocation(namespace, "trainer", "main", GPU, [gpu_uuid(0)]),
        *(Allocation(namespace, f"web-{c}", "main", GPU, [f"{gpu_uuid(1)}::{n}"])
          for n, c in enumerate("abc")),
        Allocation(namespace, "big", "main", "nvidia.com/mig-3g.40gb", [mig_uuid(2, 1)]),
        Allocation(namespace, "small", "main", "nvidia.com/mig-2g.20gb", [mig_uuid(2, 5)]),
        Allocation(namespace, "outsider", "main", GPU, [gpu_uuid(3)]),
    ]  # fmt: skip
    allocatable = [(GPU, gpu_uuid(0)), (GPU, gpu_uuid(3))]
    allocatable += [(GPU, f"{gpu_uuid(1)}::{n}") for n in range(4)]
    allocatable += [("nvidia.com/mig-3g.40gb", mig_uuid(2, 1)),
                    ("nvidia.com/mig-2g.20gb", mig_uuid(2, 5))]  # fmt: skip
    return gpus, KubeletBehavior(allocations=allocations, allocatable=allocatable)


def test_gpu_telemetry_shows_per_pod_rows_for_whole_mig_and_time_sliced_gpus(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any, tmp_path: Path,
) -> None:  # fmt: skip
    kubelet.add_node(name="gpu-node")
    for pod in ("trainer", "web-a", "web-b", "web-c", "big", "small"):
        kubelet.run_pod(namespace=namespace, name=pod, node="gpu-node", labels=ML,
                        container="main")  # fmt: skip
    kubelet.run_pod(namespace=namespace, name="outsider", node="gpu-node", container="main")
    gpus, behavior = _scenario(namespace)

    with fake_exporter(ExporterBehavior(body=exposition(gpus, hostname="gpu-node"))) as exporter, \
            fake_kubelet(str(tmp_path), behavior) as pod_resources:  # fmt: skip
        start_agent("gpu-node", "--dcgm-exporter-host", exporter.host,
                    "--pod-resources-socket", pod_resources.socket_path)  # fmt: skip
        telemetry = {
            "apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
            "metadata": {"name": "ml-gpus", "namespace": namespace},
            "spec": {
                "selector": {"podSelector": {"matchLabels": ML}},
                "source": {"dcgmExporter": {"port": exporter.port}},
                "interval": "1s",
                "alerts": {"memoryUsedPercent": 70, "idleUtilizationPercent": 5, "idleFor": "1s"},
            },
        }  # fmt: skip
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(telemetry))

        def settled() -> dict[str, Any] | None:
            st = get_json(control_plane, "gput", "ml-gpus", "-n", namespace).get("status") or {}
            kinds = {a["kind"] for a in st.get("alerts") or []}
            ready = st.get("phase") == "Running" and len(st.get("pods") or []) == 6
            return st if ready and {"Idle", "MemoryHigh"} <= kinds else None

        status = wait_for(settled, timeout=90, what="six pod rows and both alert kinds")

    rows = {row["pod"]: row for row in status["pods"]}
    assert set(rows) == {"trainer", "web-a", "web-b", "web-c", "big", "small"}
    assert all(row["node"] == "gpu-node" and row["container"] == "main" for row in rows.values())

    (trainer,) = rows["trainer"]["gpus"]
    assert (trainer["uuid"], trainer["sharing"], trainer["utilizationPercent"]) == (
        gpu_uuid(0), "exclusive", 87,
    )  # fmt: skip
    assert trainer["memoryUsedBytes"] == 60000 * 2**20
    assert trainer["memoryTotalBytes"] == (60000 + 21559) * 2**20
    assert trainer["powerWatts"] == 412.5 and trainer["temperatureCelsius"] == 61

    for web in ("web-a", "web-b", "web-c"):
        (shared,) = rows[web]["gpus"]
        assert (shared["uuid"], shared["sharing"]) == (gpu_uuid(1), "time-sliced")
        assert shared["utilizationPercent"] == 3

    (big,) = rows["big"]["gpus"]
    (small,) = rows["small"]["gpus"]
    assert (big["sharing"], big["migProfile"], big["utilizationPercent"]) == (
        "mig",
        "3g.40gb",
        81.25,
    )
    assert (small["migProfile"], small["utilizationPercent"]) == ("2g.20gb", 25)
    assert big["memoryUsedBytes"] == 20000 * 2**20

    memory_high = [a for a in status["alerts"] if a["kind"] == "MemoryHigh"]
    idle = [a for a in status["alerts"] if a["kind"] == "Idle"]
    assert {a["pod"] for a in memory_high} == {"trainer"}
    assert memory_high[0]["value"] == round(100 * 60000 / (60000 + 21559), 2)
    # The shared GPU idles at 3%: each sharer is told; the MIG slice at 25% is not idle.
    assert {a["pod"] for a in idle} == {"web-a", "web-b", "web-c"}
    assert {a["gpu"] for a in idle} == {gpu_uuid(1)}
    # Four devices (two whole GPUs, two MIG instances); the shared GPU counts once.
    assert status["summary"]["gpus"] == 4
    assert status["summary"]["pods"] == 6
    assert status["summary"]["memoryUsedBytes"] == (60000 + 500 + 20000 + 3000) * 2**20
    assert status["summary"]["avgUtilization"] == round((87 + 3 + 81.25 + 25) / 4, 2)

    table = control_plane.kubectl("get", "gput", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "PODS", "GPUS", "UTIL", "MEMORY", "AGE"]
    row = table[1].split()
    assert row[:3] == ["ml-gpus", "Running", "6"]
    assert int(row[3]) == status["summary"]["gpus"]


def test_an_unreachable_exporter_degrades_the_session_without_stale_rows(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any, tmp_path: Path,
) -> None:  # fmt: skip
    kubelet.add_node(name="gpu-node")
    kubelet.run_pod(namespace=namespace, name="trainer", node="gpu-node", labels=ML,
                    container="main")  # fmt: skip
    _, behavior = _scenario(namespace)
    with fake_kubelet(str(tmp_path), behavior) as pod_resources:
        start_agent("gpu-node", "--pod-resources-socket", pod_resources.socket_path)
        telemetry = {
            "apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
            "metadata": {"name": "no-exporter", "namespace": namespace},
            "spec": {"selector": {"podSelector": {"matchLabels": ML}},
                     "source": {"dcgmExporter": {"port": closed_port()}}, "interval": "1s"},
        }  # fmt: skip
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(telemetry))

        def degraded() -> dict[str, Any] | None:
            st = get_json(control_plane, "gput", "no-exporter", "-n", namespace).get("status") or {}
            conditions = {c["type"]: c for c in st.get("conditions") or []}
            flagged = conditions.get("Degraded", {}).get("status") == "True"
            return st if flagged and st.get("nodes") else None

        status = wait_for(degraded, timeout=60, what="the Degraded condition")
    (node,) = status["nodes"]
    assert node["node"] == "gpu-node"
    assert node["state"] == "Degraded"
    assert "exporter" in node["message"].lower()
    # The allocation is still known from pod-resources, but no reading may be shown.
    readings = {"utilizationPercent", "memoryUsedBytes", "temperatureCelsius", "powerWatts",
                "lastUpdated"}  # fmt: skip
    for row in [*node.get("pods", []), *status.get("pods", [])]:
        assert row["pod"] == "trainer"
        for gpu in row["gpus"]:
            assert gpu["uuid"] == gpu_uuid(0)
            assert not readings & set(gpu), gpu
    assert status["phase"] == "Running"
    degraded_condition = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "gpu-node" in degraded_condition["message"]
