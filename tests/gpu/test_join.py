"""Attribution of dcgm-exporter readings to pods (the pure join)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args

from orb8_agent.gpu.dcgm import parse_exposition
from orb8_agent.gpu.join import join, mig_profile_of, parse_device_id
from orb8_agent.gpu.model import (
    AllocatableDevice,
    DeviceAllocation,
    GpuPodRow,
    NvmlDevice,
    NvmlMigInstance,
    NvmlReading,
    PodResourcesView,
    Sharing,
)
from orb8_agent.gpu.summary import summarize
from orb8_common import models
from orb8_dev.gpu_servers import Allocation, Pod, exposition, gpu_uuid, mig_uuid
from tests.gpu import scenarios
from tests.gpu.scenarios import Scenario, target

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
MIB = 2**20


def view(sc: Scenario) -> PodResourcesView:
    return PodResourcesView(
        fetched_at=NOW,
        allocations=tuple(
            DeviceAllocation(a.namespace, a.pod, a.container, a.resource, d)
            for a in sc.allocations
            for d in a.device_ids
        ),
        allocatable=tuple(AllocatableDevice(r, d) for r, d in sc.allocatable),
    )


def run(
    sc: Scenario, *, kubernetes_mode: bool = False, resources: bool = True, **kw: object
) -> tuple[dict[str, GpuPodRow], tuple[str, ...]]:
    scrape = parse_exposition(exposition(sc.gpus, kubernetes_mode=kubernetes_mode), fetched_at=NOW)
    result = join(
        node="gpu-node-1",
        targets=sc.targets,
        exporter=scrape,
        resources=view(sc) if resources else None,
        **kw,  # type: ignore[arg-type]
    )
    rows = {r.pod: r for r in result.rows}
    assert len(rows) == len(result.rows), "one row per pod in these scenarios"
    return rows, result.notes


def test_eight_whole_gpus_are_exclusive_with_their_own_readings() -> None:
    rows, notes = run(scenarios.whole_gpus(n=8))
    assert len(rows) == 8 and notes == ()
    r = rows["trainer-5"]
    assert (r.namespace, r.container, r.node) == ("ml", "main", "gpu-node-1")
    (g,) = r.gpus
    assert g.uuid == gpu_uuid(5)
    assert (g.index, g.model, g.sharing, g.mig_profile) == (
        5,
        "NVIDIA H100 80GB HBM3",
        Sharing.EXCLUSIVE,
        "",
    )
    assert g.utilization_percent == 55.0
    assert g.memory_used_bytes == 6 * 1024 * MIB
    assert g.memory_total_bytes == 81559 * MIB
    assert (g.temperature_celsius, g.power_watts, g.last_updated) == (45.0, 105.25, NOW)
    assert g.to_status() == {
        "uuid": gpu_uuid(5),
        "index": 5,
        "model": "NVIDIA H100 80GB HBM3",
        "sharing": "exclusive",
        "migProfile": "",
        "utilizationPercent": 55.0,
        "memoryUsedBytes": 6 * 1024 * MIB,
        "memoryTotalBytes": 81559 * MIB,
        "temperatureCelsius": 45.0,
        "powerWatts": 105.25,
        "lastUpdated": "2026-11-29T05:00:00Z",
    }


def test_pods_outside_the_target_set_are_absent() -> None:
    sc = scenarios.whole_gpus(n=8)
    sc.targets = [t for t in sc.targets if t.name in ("trainer-1", "trainer-6")]
    rows, _ = run(sc)
    assert set(rows) == {"trainer-1", "trainer-6"}


def test_exporter_labels_alone_attribute_when_pod_resources_is_down() -> None:
    rows, notes = run(
        scenarios.whole_gpus(n=3, kubernetes_mode_pods=True), kubernetes_mode=True, resources=False
    )
    assert {p: r.gpus[0].uuid for p, r in rows.items()} == {
        f"trainer-{i}": gpu_uuid(i) for i in range(3)
    }
    # The exporter labels one pod per GPU, so one label does not prove exclusive use.
    assert all(r.gpus[0].sharing is Sharing.UNKNOWN for r in rows.values())
    assert any("attribution is partial" in n for n in notes)


def test_time_sliced_gpu_lists_every_sharer_despite_the_exporter_labelling_one() -> None:
    sc = scenarios.time_sliced(kubernetes_mode=True)
    text = exposition(sc.gpus, kubernetes_mode=True)
    assert text.count('pod="web-a"') > 0 and 'pod="web-b"' not in text  # the exporter bug
    rows, notes = run(sc, kubernetes_mode=True)
    assert set(rows) == {"web-a", "web-b", "web-c", "solo"}
    for p in ("web-a", "web-b", "web-c"):
        (g,) = rows[p].gpus
        assert (g.uuid, g.sharing, g.scope) == (gpu_uuid(0), Sharing.TIME_SLICED, "device")
        # Device-wide: DCGM cannot split a time-sliced GPU, and the note says so.
        assert (g.utilization_percent, g.memory_used_bytes) == (72.0, 30000 * MIB)
        assert "time-sliced between 3 pod(s)" in g.note
    assert rows["solo"].gpus[0].sharing is Sharing.EXCLUSIVE
    assert any("device-wide readings only" in n for n in notes)
    s = summarize(rows=tuple(rows.values()))
    # The shared GPU counts once, not three times.
    assert (s.gpus, s.pods) == (2, 4)
    assert s.memory_used_bytes == (30000 + 500) * MIB
    assert s.avg_utilization == (72.0 + 3.0) / 2


def test_replica_ids_alone_mark_a_gpu_time_sliced() -> None:
    sc = scenarios.time_sliced(kubernetes_mode=False)
    sc.allocations = sc.allocations[:1] + sc.allocations[3:]  # only web-a holds a replica now
    sc.targets = [t for t in sc.targets if t.name == "web-a"]
    rows, _ = run(sc)
    assert rows["web-a"].gpus[0].sharing is Sharing.TIME_SLICED


def test_mig_profile_match_when_unambiguous_and_a_note_when_not() -> None:
    rows, notes = run(scenarios.mig())
    big = rows["big"].gpus[0]
    assert (big.uuid, big.sharing, big.mig_profile, big.index) == (
        mig_uuid(0, 1),
        Sharing.MIG,
        "3g.40gb",
        0,
    )
    assert big.utilization_percent == 81.25  # GR_ENGINE_ACTIVE x 100
    assert big.memory_used_bytes == 20000 * MIB
    assert big.memory_total_bytes == 40096 * MIB
    # Temperature and power are the parent GPU's (device-wide) readings.
    assert (big.temperature_celsius, big.power_watts) == (55.0, 250.5)
    for p in ("small-a", "small-b"):
        g = rows[p].gpus[0]
        assert (g.sharing, g.mig_profile, g.index, g.model) == (
            Sharing.MIG,
            "2g.20gb",
            0,
            "NVIDIA A100-SXM4-80GB",
        )
        assert (
            g.utilization_percent is None and g.memory_used_bytes is None and g.last_updated is None
        )
        assert "cannot tell which of 2 2g.20gb MIG instances" in g.note
    assert len([n for n in notes if "cannot tell" in n]) == 2


def test_mig_with_exporter_pod_labels_maps_every_instance() -> None:
    rows, notes = run(scenarios.mig(labels=True), kubernetes_mode=True)
    assert notes == ()
    assert rows["small-a"].gpus[0].uuid == mig_uuid(0, 5)
    assert rows["small-a"].gpus[0].utilization_percent == 25.0
    assert rows["small-b"].gpus[0].uuid == mig_uuid(0, 6)
    assert rows["small-b"].gpus[0].memory_used_bytes == 9000 * MIB
    assert rows["small-b"].gpus[0].utilization_percent == 0.0


def test_mig_labels_without_pod_resources_still_attribute() -> None:
    rows, _ = run(scenarios.mig(labels=True), kubernetes_mode=True, resources=False)
    g = rows["small-b"].gpus[0]
    # The MIG UUID is unknown without pod-resources; parent uuid and GPU_I_ID name it.
    assert (g.uuid, g.mig_profile, g.memory_used_bytes) == (
        f"MIG-{gpu_uuid(0)}/6",
        "2g.20gb",
        9000 * MIB,
    )


def test_mig_with_nvml_maps_every_instance() -> None:
    nvml = NvmlReading(
        read_at=NOW,
        devices=(
            NvmlDevice(
                uuid=gpu_uuid(0),
                index=0,
                model="NVIDIA A100-SXM4-80GB",
                utilization_percent=None,
                memory_used_bytes=None,
                memory_total_bytes=None,
                temperature_celsius=55.0,
                power_watts=250.5,
                mig_instances=tuple(
                    NvmlMigInstance(mig_uuid(0, gi), gpu_uuid(0), gi, p, None, None)
                    for gi, p in ((1, "3g.40gb"), (5, "2g.20gb"), (6, "2g.20gb"))
                ),
            ),
        ),
    )
    rows, notes = run(scenarios.mig(), nvml=nvml)
    assert notes == ()
    assert rows["small-a"].gpus[0].utilization_percent == 25.0
    assert rows["small-b"].gpus[0].utilization_percent == 0.0


def test_an_allocated_gpu_missing_from_the_exporter_has_no_readings() -> None:
    sc = scenarios.whole_gpus(n=2)
    sc.gpus = sc.gpus[:1]
    rows, notes = run(sc)
    g = rows["trainer-1"].gpus[0]
    assert g.uuid == gpu_uuid(1) and g.last_updated is None and g.utilization_percent is None
    assert g.to_status() == {
        "uuid": gpu_uuid(1),
        "model": "",
        "sharing": "exclusive",
        "migProfile": "",
    }
    assert any("no dcgm-exporter readings for " + gpu_uuid(1) in n for n in notes)


def test_multi_gpu_container_lists_gpus_by_index() -> None:
    sc = scenarios.whole_gpus(n=4)
    sc.allocations = [
        Allocation("ml", "trainer-0", "main", "nvidia.com/gpu", [gpu_uuid(3), gpu_uuid(1)])
    ]
    sc.targets = [target("ml", "trainer-0")]
    rows, _ = run(sc)
    assert [g.index for g in rows["trainer-0"].gpus] == [1, 3]


def test_exporter_pod_labels_join_with_an_unlabelled_exporter_pod() -> None:
    sc = scenarios.whole_gpus(n=2)
    sc.gpus[1].pods = [Pod("other", "stranger", "main")]
    rows, _ = run(sc, kubernetes_mode=True)
    assert set(rows) == {"trainer-0", "trainer-1"}
    # The exporter says another pod also uses GPU 1: it is shared.
    assert rows["trainer-1"].gpus[0].sharing is Sharing.TIME_SLICED


def test_parse_device_id_and_profile() -> None:
    assert parse_device_id(gpu_uuid(1)).kind == "gpu"
    r = parse_device_id(gpu_uuid(1) + "::3")
    assert (r.kind, r.uuid, r.replica) == ("replica", gpu_uuid(1), 3)
    assert parse_device_id(mig_uuid(0, 1)).kind == "mig"
    assert parse_device_id("0").kind == "other"
    assert mig_profile_of("nvidia.com/mig-1g.10gb") == "1g.10gb"
    assert mig_profile_of("nvidia.com/gpu") == ""


def test_a_label_without_container_defers_to_pod_resources() -> None:
    sc = scenarios.whole_gpus(n=1)
    sc.gpus[0].pods = [Pod("ml", "trainer-0", "")]
    scrape = parse_exposition(exposition(sc.gpus, kubernetes_mode=True), fetched_at=NOW)
    result = join(node="n", targets=sc.targets, exporter=scrape, resources=view(sc))
    assert [(r.pod, r.container) for r in result.rows] == [("trainer-0", "main")]


def test_the_agents_sharing_values_are_the_contracts() -> None:
    # the agent's enum writes GpuDevice.sharing: a value the contract lacks would be refused
    assert {s.value for s in Sharing} == set(get_args(models.GpuSharing))
