"""Find the cgroup v2 directory (and so the cgroup id) of each container.

Kubelet lays containers out under the cgroup v2 root in one of two ways:

* systemd driver: ``kubepods.slice/kubepods-<qos>.slice/
  kubepods-<qos>-pod<uid with _>.slice/<runtime>-<id>.scope`` (Guaranteed pods
  sit directly under ``kubepods.slice``), where ``<runtime>`` is
  ``cri-containerd``, ``crio`` or ``docker``;
* cgroupfs driver: ``kubepods/<qos>/pod<uid>/<id>`` (Guaranteed pods sit
  directly under ``kubepods``).

The cgroup id that ``bpf_get_current_cgroup_id()`` returns is the inode
number of that directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_RUNTIME_SCOPE = re.compile(
    r"^(?P<runtime>cri-containerd|crio|docker)-(?P<id>[0-9a-f]{12,64})\.scope$"
)
_SYSTEMD_POD = re.compile(
    r"^kubepods(?:-(?:burstable|besteffort))?-pod(?P<uid>[0-9a-f_]{36})\.slice$"
)
_CGROUPFS_POD = re.compile(r"^pod(?P<uid>[0-9a-f-]{36})$")
_CGROUPFS_CONTAINER = re.compile(r"^(?P<id>[0-9a-f]{64})$")
_QOS = {"burstable": "Burstable", "besteffort": "BestEffort"}
_KUBEPODS_ROOTS = ("kubepods.slice", "kubepods")
_MAX_DEPTH = 4


@dataclass(frozen=True)
class ContainerCgroup:
    """One container's cgroup directory."""

    container_id: str
    pod_uid: str
    qos: str
    path: Path
    cgroup_id: int


def strip_runtime_prefix(container_id: str) -> str:
    """``containerd://abc`` → ``abc`` (as in a pod's containerStatuses)."""
    return container_id.split("://", 1)[-1]


def parse_container_dir(*, relative: str) -> tuple[str, str, str] | None:
    """Parse a path relative to the cgroup root into (container id, pod uid, QoS class).

    Returns None for anything that is not a container directory of a pod.
    """
    parts = [part for part in relative.strip("/").split("/") if part]
    if len(parts) < 3 or parts[0] not in _KUBEPODS_ROOTS:
        return None
    pod_dir, leaf = parts[-2], parts[-1]
    qos = _qos_of(parts[1:-2])
    if qos is None:
        return None
    if parts[0] == "kubepods.slice":
        scope = _RUNTIME_SCOPE.match(leaf)
        pod = _SYSTEMD_POD.match(pod_dir)
        if scope is None or pod is None:
            return None
        return scope["id"], pod["uid"].replace("_", "-"), qos
    container = _CGROUPFS_CONTAINER.match(leaf)
    pod = _CGROUPFS_POD.match(pod_dir)
    if container is None or pod is None:
        return None
    return container["id"], pod["uid"], qos


def _qos_of(middle: list[str]) -> str | None:
    """The QoS class from the directories between the kubepods root and the pod."""
    if not middle:
        return "Guaranteed"
    if len(middle) != 1:
        return None
    name = middle[0].removeprefix("kubepods-").removesuffix(".slice")
    return _QOS.get(name)


def find_container_cgroups(
    *, root: Path, container_ids: Iterable[str]
) -> dict[str, ContainerCgroup]:
    """Walk the kubepods subtree once; return the cgroups of the wanted containers.

    ``container_ids`` may carry runtime prefixes (``containerd://``). Missing
    containers are simply absent from the result.
    """
    wanted = {strip_runtime_prefix(cid) for cid in container_ids}
    found: dict[str, ContainerCgroup] = {}
    if not wanted:
        return found
    for path in _walk_kubepods(root):
        parsed = parse_container_dir(relative=str(path.relative_to(root)))
        if parsed is None or parsed[0] not in wanted:
            continue
        container_id, pod_uid, qos = parsed
        try:
            cgroup_id = path.stat().st_ino
        except FileNotFoundError:
            continue  # the container went away while we walked
        found[container_id] = ContainerCgroup(
            container_id=container_id, pod_uid=pod_uid, qos=qos, path=path, cgroup_id=cgroup_id
        )
    return found


def _walk_kubepods(root: Path) -> Iterator[Path]:
    for top in _KUBEPODS_ROOTS:
        start = root / top
        if not start.is_dir():
            continue
        stack = [(start, 0)]
        while stack:
            directory, depth = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                child = Path(entry.path)
                yield child
                if depth + 1 < _MAX_DEPTH:
                    stack.append((child, depth + 1))


def pids_in(*, path: Path) -> list[int]:
    """Processes in one cgroup directory (not its children)."""
    try:
        text = (path / "cgroup.procs").read_text()
    except FileNotFoundError:
        return []
    return [int(pid) for pid in text.split()]
