"""The NVML source over an injected library, and the per-process split it enables."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orb8_agent.gpu.errors import NvmlUnavailableError
from orb8_agent.gpu.join import join
from orb8_agent.gpu.model import (
    DeviceAllocation,
    PodResourcesView,
    Sharing,
    TargetContainer,
    TargetPod,
)
from orb8_agent.gpu.nvml import NvmlSource, load_pynvml, mig_profile_from_name
from orb8_agent.gpu.summary import summarize
from orb8_dev.gpu_servers import gpu_uuid, mig_uuid
from tests.gpu.fake_nvml import FakeMigDevice, FakeNvml, FakeNvmlDevice, FakeProc

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
GIB = 2**30
MIB = 2**20

UID_A = "aaaaaaaa-1111-4111-8111-111111111111"
UID_B = "bbbbbbbb-2222-4222-8222-222222222222"
UID_C = "cccccccc-3333-4333-8333-333333333333"
UID_D = "dddddddd-4444-4444-8444-444444444444"
CID_A = "a" * 64
CID_B = "b" * 64
CID_C = "c" * 64
CID_D = "d" * 64


def write_proc(root: Path, pid: int, cgroup: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(cgroup)


def systemd_path(uid: str, cid: str, qos: str = "burstable") -> str:
    u = uid.replace("-", "_")
    return (
        f"0::/kubepods.slice/kubepods-{qos}.slice/"
        f"kubepods-{qos}-pod{u}.slice/cri-containerd-{cid}.scope\n"
    )


@pytest.fixture
def node(tmp_path: Path) -> tuple[FakeNvml, str, list[TargetPod]]:
    """GPU 0 time-sliced by pods a (two processes) and b; GPU 1 exclusive to c;
    GPU 2 in MIG mode with d on its 3g.40gb instance; one host process on GPU 0."""
    proc = tmp_path / "proc"
    write_proc(proc, 100, systemd_path(UID_A, CID_A))
    write_proc(proc, 101, systemd_path(UID_A, CID_A))
    write_proc(proc, 200, f"12:memory:/kubepods/besteffort/pod{UID_B}/{CID_B}\n")
    write_proc(proc, 300, systemd_path(UID_C, CID_C, "besteffort"))
    write_proc(proc, 400, systemd_path(UID_D, CID_D))
    write_proc(proc, 900, "0::/system.slice/xorg.service\n")
    lib = FakeNvml(
        [
            FakeNvmlDevice(
                uuid=gpu_uuid(0),
                util=90,
                used=30 * GIB,
                procs=[
                    FakeProc(100, used_mib=8192, sm_util=30),
                    FakeProc(101, used_mib=2048, sm_util=10),
                    FakeProc(200, used_mib=4096, sm_util=45),
                    FakeProc(900, used_mib=512, sm_util=5),
                ],
            ),
            FakeNvmlDevice(
                uuid=gpu_uuid(1),
                util=12,
                used=3 * GIB,
                procs=[FakeProc(300, used_mib=3000, sm_util=12)],
            ),
            FakeNvmlDevice(
                uuid=gpu_uuid(2),
                name="NVIDIA A100-SXM4-80GB",
                util=None,
                mig=[
                    FakeMigDevice(
                        uuid=mig_uuid(2, 1),
                        gi_id=1,
                        name="NVIDIA A100-SXM4-80GB MIG 3g.40gb",
                        used=5 * GIB,
                        total=40 * GIB,
                        procs=[FakeProc(400, used_mib=5120)],
                    ),
                    FakeMigDevice(
                        uuid=mig_uuid(2, 2),
                        gi_id=2,
                        name="NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                        used=0,
                        total=10 * GIB,
                    ),
                ],
            ),
        ]
    )
    targets = [
        TargetPod("ml", "a", UID_A, (TargetContainer("main", f"containerd://{CID_A}"),)),
        TargetPod("ml", "b", UID_B, (TargetContainer("main", f"containerd://{CID_B}"),)),
        TargetPod("ml", "c", UID_C, (TargetContainer("main", f"containerd://{CID_C}"),)),
        TargetPod("ml", "d", UID_D, (TargetContainer("main", f"containerd://{CID_D}"),)),
    ]
    return lib, str(proc), targets


def test_reading_devices_mig_and_processes(node: tuple[FakeNvml, str, list[TargetPod]]) -> None:
    lib, proc, _ = node
    reading = NvmlSource(library=lib, proc_root=proc).read(now=NOW)
    assert [d.uuid for d in reading.devices] == [gpu_uuid(0), gpu_uuid(1), gpu_uuid(2)]
    d0 = reading.devices[0]
    assert (d0.index, d0.utilization_percent, d0.memory_used_bytes, d0.power_watts) == (
        0,
        90.0,
        30 * GIB,
        300.0,
    )
    d2 = reading.devices[2]
    assert d2.utilization_percent is None
    assert [(m.uuid, m.gpu_instance_id, m.profile) for m in d2.mig_instances] == [
        (mig_uuid(2, 1), 1, "3g.40gb"),
        (mig_uuid(2, 2), 2, "1g.10gb"),
    ]
    procs = {p.pid: p for p in reading.processes}
    assert procs[100].pod_uid == UID_A and procs[100].container_id == CID_A
    assert procs[100].sm_util_percent == 30.0 and procs[100].used_memory_bytes == 8192 * MIB
    assert procs[200].pod_uid == UID_B  # cgroup v1, cgroupfs layout
    assert procs[900].pod_uid is None
    assert procs[400].gpu_uuid == mig_uuid(2, 1)
    assert procs[400].sm_util_percent is None  # NVML has no per-process utilization on MIG


def test_process_utilization_resumes_from_the_last_sample(
    node: tuple[FakeNvml, str, list[TargetPod]],
) -> None:
    lib, proc, _ = node
    src = NvmlSource(library=lib, proc_root=proc)
    src.read(now=NOW)
    src.read(now=NOW)
    # GPU 0 and GPU 1, twice: the second round asks only for newer samples.
    assert lib.utilization_queries[:2] == [0, 0]
    assert lib.utilization_queries[2] == 1_000_003
    assert lib.init_calls == 1


def test_time_sliced_gpu_is_split_by_process(node: tuple[FakeNvml, str, list[TargetPod]]) -> None:
    lib, proc, targets = node
    reading = NvmlSource(library=lib, proc_root=proc).read(now=NOW)
    result = join(node="gpu-node-1", targets=targets, nvml=reading)
    rows = {r.pod: r for r in result.rows}
    assert set(rows) == {"a", "b", "c", "d"}
    a = rows["a"].gpus[0]
    assert (a.uuid, a.sharing, a.scope) == (gpu_uuid(0), Sharing.TIME_SLICED, "process")
    assert a.utilization_percent == 40.0
    assert a.memory_used_bytes == 10240 * MIB
    assert a.memory_total_bytes == 80 * GIB
    assert a.last_updated == NOW
    b = rows["b"].gpus[0]
    assert (b.utilization_percent, b.memory_used_bytes) == (45.0, 4096 * MIB)
    c = rows["c"].gpus[0]
    assert (c.sharing, c.utilization_percent, c.memory_used_bytes) == (
        Sharing.EXCLUSIVE,
        12.0,
        3 * GIB,
    )
    d = rows["d"].gpus[0]
    assert (d.uuid, d.sharing, d.mig_profile, d.index) == (
        mig_uuid(2, 1),
        Sharing.MIG,
        "3g.40gb",
        2,
    )
    assert (d.memory_used_bytes, d.memory_total_bytes, d.utilization_percent) == (
        5 * GIB,
        40 * GIB,
        None,
    )
    assert not any("could not be tied" in n for n in result.notes)  # xorg is a host process
    s = summarize(rows=result.rows)
    assert s.gpus == 3 and s.pods == 4
    assert s.memory_used_bytes == (10240 + 4096) * MIB + 3 * GIB + 5 * GIB


def test_pod_resources_marks_sharing_even_when_a_sharer_is_idle(
    node: tuple[FakeNvml, str, list[TargetPod]],
) -> None:
    lib, proc, targets = node
    idle = TargetPod("ml", "e", "eeeeeeee-5555-4555-8555-555555555555", (TargetContainer("main"),))
    resources = PodResourcesView(
        fetched_at=NOW,
        allocations=(
            DeviceAllocation("ml", "a", "main", "nvidia.com/gpu", f"{gpu_uuid(0)}::0"),
            DeviceAllocation("ml", "b", "main", "nvidia.com/gpu", f"{gpu_uuid(0)}::1"),
            DeviceAllocation("ml", "e", "main", "nvidia.com/gpu", f"{gpu_uuid(0)}::2"),
        ),
    )
    reading = NvmlSource(library=lib, proc_root=proc).read(now=NOW)
    result = join(node="n", targets=[*targets, idle], nvml=reading, resources=resources)
    rows = {r.pod: r for r in result.rows}
    e = rows["e"].gpus[0]
    # Nothing of e's runs on the GPU: a measured zero, not a missing reading.
    assert (e.sharing, e.utilization_percent, e.memory_used_bytes) == (Sharing.TIME_SLICED, 0.0, 0)
    assert rows["a"].gpus[0].utilization_percent == 40.0


def test_unsupported_process_utilization_leaves_utilization_unknown(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write_proc(proc, 100, systemd_path(UID_A, CID_A))
    write_proc(proc, 200, systemd_path(UID_B, CID_B))
    lib = FakeNvml(
        [
            FakeNvmlDevice(
                uuid=gpu_uuid(0),
                procs=[
                    FakeProc(100, used_mib=100, sm_util=50),
                    FakeProc(200, used_mib=None, sm_util=50),
                ],
                process_utilization_supported=False,
            )
        ]
    )
    targets = [
        TargetPod("ml", "a", UID_A, (TargetContainer("main", f"containerd://{CID_A}"),)),
        TargetPod("ml", "b", UID_B, (TargetContainer("main", f"containerd://{CID_B}"),)),
    ]
    reading = NvmlSource(library=lib, proc_root=str(proc)).read(now=NOW)
    rows = {r.pod: r for r in join(node="n", targets=targets, nvml=reading).rows}
    assert rows["a"].gpus[0].utilization_percent is None
    assert rows["a"].gpus[0].memory_used_bytes == 100 * MIB
    assert rows["b"].gpus[0].memory_used_bytes is None  # NVML could not say


def test_init_failure_is_unavailable_and_retried_later(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeNvml([], init_error="Driver Not Loaded")
    src = NvmlSource(library=lib)
    with pytest.raises(NvmlUnavailableError, match="nvmlInit failed: Driver Not Loaded"):
        src.read(now=NOW)
    with pytest.raises(NvmlUnavailableError, match="Driver Not Loaded"):
        src.read(now=NOW)
    assert lib.init_calls == 1  # the second attempt waits out RETRY_AFTER_S
    monkeypatch.setattr("orb8_agent.gpu.nvml.RETRY_AFTER_S", 0.0)
    lib.init_error = None
    assert src.read(now=NOW).devices == ()
    assert lib.init_calls == 2
    src.close()
    assert lib.shutdown_calls == 1


def test_missing_nvidia_ml_py_is_unavailable_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    with pytest.raises(NvmlUnavailableError, match=r"pip install 'orb8\[nvml\]'"):
        NvmlSource(loader=load_pynvml).probe()


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1g.5gb"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me", "1g.10gb+me"),
        ("NVIDIA H100 80GB HBM3", ""),
    ],
)
def test_mig_profile_from_name(name: str, profile: str) -> None:
    assert mig_profile_from_name(name) == profile


def test_without_hostpid_a_sharer_without_processes_is_unknown_not_zero(tmp_path: Path) -> None:
    lib = FakeNvml(
        [FakeNvmlDevice(uuid=gpu_uuid(0), procs=[FakeProc(100, used_mib=100, sm_util=50)])]
    )
    targets = [TargetPod("ml", p, "", (TargetContainer("main"),)) for p in ("a", "b")]
    resources = PodResourcesView(
        fetched_at=NOW,
        allocations=tuple(
            DeviceAllocation("ml", p, "main", "nvidia.com/gpu", f"{gpu_uuid(0)}::{n}")
            for n, p in enumerate(("a", "b"))
        ),
    )
    # An empty /proc: no process can be tied to a pod.
    reading = NvmlSource(library=lib, proc_root=str(tmp_path)).read(now=NOW)
    result = join(node="n", targets=targets, nvml=reading, resources=resources)
    for row in result.rows:
        g = row.gpus[0]
        assert (g.sharing, g.utilization_percent, g.memory_used_bytes) == (
            Sharing.TIME_SLICED,
            None,
            None,
        )
        assert g.memory_total_bytes == 80 * GIB and g.last_updated == NOW
    assert any("needs hostPID" in n for n in result.notes)
