"""Container cgroup discovery across runtimes, QoS classes and cgroup drivers."""

from __future__ import annotations

from pathlib import Path

import pytest

from orb8_agent.control.containers import (
    find_container_cgroups,
    parse_container_dir,
    strip_runtime_prefix,
)

UID = "0d3c9d4e-7f5a-4b6c-9e1d-2f3a4b5c6d7e"
SYSTEMD_UID = UID.replace("-", "_")
CID = "a" * 63 + "1"


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (
            f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/"
            f"cri-containerd-{CID}.scope",
            (CID, UID, "Burstable"),
        ),
        (
            f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice/"
            f"crio-{CID}.scope",
            (CID, UID, "BestEffort"),
        ),
        (
            f"kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/docker-{CID}.scope",
            (CID, UID, "Guaranteed"),
        ),
        (f"kubepods/burstable/pod{UID}/{CID}", (CID, UID, "Burstable")),
        (f"kubepods/besteffort/pod{UID}/{CID}", (CID, UID, "BestEffort")),
        (f"kubepods/pod{UID}/{CID}", (CID, UID, "Guaranteed")),
    ],
    ids=["containerd", "crio", "docker-guaranteed", "cgroupfs", "cgroupfs-be", "cgroupfs-g"],
)
def test_parses_every_kubelet_layout(relative: str, expected: tuple[str, str, str]) -> None:
    assert parse_container_dir(relative=relative) == expected


@pytest.mark.parametrize(
    "relative",
    [
        "kubepods.slice",
        f"kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice",
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/"
        f"cri-containerd-{CID}.scope/init",
        f"kubepods.slice/kubepods-weird.slice/kubepods-weird-pod{SYSTEMD_UID}.slice/"
        f"crio-{CID}.scope",
        f"system.slice/containerd.service/cri-containerd-{CID}.scope",
        f"kubepods/burstable/pod{UID}/not-a-container",
        f"kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/crio-conmon-{CID}.scope",
    ],
)
def test_ignores_directories_that_are_not_containers(relative: str) -> None:
    assert parse_container_dir(relative=relative) is None


def test_strip_runtime_prefix() -> None:
    assert strip_runtime_prefix(f"containerd://{CID}") == CID
    assert strip_runtime_prefix(f"cri-o://{CID}") == CID
    assert strip_runtime_prefix(CID) == CID


def test_walk_finds_only_wanted_containers_with_their_inode(tmp_path: Path) -> None:
    other = "b" * 64
    wanted_dir = (
        tmp_path / "kubepods.slice" / "kubepods-burstable.slice"
        / f"kubepods-burstable-pod{SYSTEMD_UID}.slice" / f"cri-containerd-{CID}.scope"
    )  # fmt: skip
    other_dir = tmp_path / "kubepods" / "besteffort" / f"pod{UID}" / other
    wanted_dir.mkdir(parents=True)
    other_dir.mkdir(parents=True)

    found = find_container_cgroups(root=tmp_path, container_ids=[f"containerd://{CID}"])

    assert set(found) == {CID}
    assert found[CID].path == wanted_dir
    assert found[CID].cgroup_id == wanted_dir.stat().st_ino
    assert found[CID].pod_uid == UID
    assert found[CID].qos == "Burstable"
    both = find_container_cgroups(root=tmp_path, container_ids=[CID, other, "c" * 64])
    assert set(both) == {CID, other}
