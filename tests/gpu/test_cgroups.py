"""cgroup path → pod uid / container id, on the strings kubelet and runtimes write."""

from __future__ import annotations

import pytest

from orb8_agent.gpu.cgroups import CgroupRef, parse_cgroup_path, parse_proc_cgroup

UID = "6f1c2e3a-1b2c-4d5e-8f90-a1b2c3d4e5f6"
UID_ = UID.replace("-", "_")
CID = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # containerd, systemd driver, burstable
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
            CgroupRef(UID, CID),
        ),
        # guaranteed QoS has no QoS slice
        (
            f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
            CgroupRef(UID, CID),
        ),
        # CRI-O and its conmon
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope",
            CgroupRef(UID, CID),
        ),
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CID}.scope",
            CgroupRef(UID, None),
        ),
        # Docker (cri-dockerd)
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope",
            CgroupRef(UID, CID),
        ),
        # cgroupfs driver
        (f"/kubepods/burstable/pod{UID}/{CID}", CgroupRef(UID, CID)),
        (f"/kubepods/pod{UID}/{CID}", CgroupRef(UID, CID)),
        (f"/kubepods/besteffort/pod{UID}", CgroupRef(UID, None)),
        # kind / nested kubelet
        (
            f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
            f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
            CgroupRef(UID, CID),
        ),
        # not a pod
        ("/system.slice/containerd.service", None),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/", None),
        (f"/pod{UID}/{CID}", None),  # "pod" outside kubepods
        ("/kubepods/burstable/podnot-a-uid/abc", None),
    ],
)
def test_parse_cgroup_path(path: str, expected: CgroupRef | None) -> None:
    assert parse_cgroup_path(path) == expected


def test_proc_cgroup_v2() -> None:
    content = (
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n"
    )
    assert parse_proc_cgroup(content) == CgroupRef(UID, CID)


def test_proc_cgroup_v1_prefers_a_line_with_the_container() -> None:
    content = (
        "12:pids:/kubepods/burstable/pod" + UID + "\n"
        "11:memory:/kubepods/burstable/pod" + UID + "/" + CID + "\n"
        "1:name=systemd:/system.slice/containerd.service\n"
    )
    assert parse_proc_cgroup(content) == CgroupRef(UID, CID)


def test_proc_cgroup_of_a_host_process() -> None:
    assert parse_proc_cgroup("0::/init.scope\n") is None
    assert parse_proc_cgroup("garbage without colons\n") is None
