"""Inside the ephemeral trace pod: find the target pod's cgroups and host veth.

The pod runs with the host's PID and network namespaces and the host's
cgroup v2 tree mounted read-only. From the target's container ids (the
workstation reads them from the pod's status) it finds each container's
cgroup directory with the agent's own code
(:func:`orb8_agent.control.containers.find_container_cgroups`), takes a
process listed there, and finds the host side of that process's veth
(:func:`orb8_agent.control.veth.host_veth_of`), as the agent does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from orb8_agent.control.containers import ContainerCgroup, find_container_cgroups, pids_in
from orb8_agent.control.veth import HostVeth, VethNotFoundError, host_veth_of
from orb8_common.errors import Orb8Error

_KUBEPODS = ("kubepods", "kubepods.slice")


class TargetNotFoundError(Orb8Error):
    """The target pod's containers or veth are not on this node."""


@dataclass(frozen=True)
class PodTarget:
    cgroups: tuple[ContainerCgroup, ...]
    cgroup_root: Path


def _roots(root: Path) -> Iterator[Path]:
    """Where kubepods may sit: the mount itself, a hybrid host's ``unified``, or one
    level below either (a kubelet ``--cgroup-root`` such as ``/orb8-0``)."""
    for base in (root, root / "unified"):
        if not _is_cgroup2(base):
            continue  # a hybrid host's tmpfs, or a v1 hierarchy: ids there mean nothing
        if any((base / k).is_dir() for k in _KUBEPODS):
            yield base
        try:
            children = sorted(p for p in base.iterdir() if p.is_dir())
        except OSError:
            continue
        for child in children:
            if any((child / k).is_dir() for k in _KUBEPODS):
                yield child


def _is_cgroup2(path: Path) -> bool:
    """Only cgroup v2 directories have ``cgroup.controllers``."""
    return (path / "cgroup.controllers").is_file()


def find_target(*, cgroup_root: Path, container_ids: Sequence[str]) -> PodTarget:
    """The cgroups of the target's running containers under ``cgroup_root``."""
    for root in _roots(cgroup_root):
        found = find_container_cgroups(root=root, container_ids=container_ids)
        if found:
            return PodTarget(cgroups=tuple(found.values()), cgroup_root=root)
    raise TargetNotFoundError(
        f"no cgroup of containers {', '.join(c[:12] for c in container_ids)} under {cgroup_root}"
    )


def host_veth(*, target: PodTarget) -> HostVeth:
    """The host-side veth of the target pod, through any of its processes."""
    last: Exception | None = None
    for cgroup in target.cgroups:
        for pid in pids_in(path=cgroup.path):
            try:
                return host_veth_of(pid=pid)
            except (VethNotFoundError, OSError) as err:
                last = err  # that process may have exited; try the next
    raise TargetNotFoundError(f"cannot find the pod's host veth: {last or 'no process'}")
