"""Map a process's cgroup path to the pod and container it belongs to.

Pure string handling over the layouts kubelet and the container runtimes
create, both for the systemd cgroup driver
(``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope``,
where the pod uid has ``_`` for ``-``) and for cgroupfs
(``/kubepods/burstable/pod<uid>/<id>``).
"""

from __future__ import annotations

from dataclasses import dataclass

_HEX = frozenset("0123456789abcdef")
# Scope prefixes of a container's own cgroup under the systemd driver.
_SCOPE_PREFIXES = ("cri-containerd-", "crio-", "docker-")


@dataclass(frozen=True, slots=True)
class CgroupRef:
    pod_uid: str
    container_id: str | None  # bare id (no runtime:// prefix); None for pod-level cgroups


def _is_uid(text: str) -> bool:
    parts = text.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(c in _HEX for p in parts for c in p)


def _is_container_id(text: str) -> bool:
    return len(text) >= 12 and all(c in _HEX for c in text)


def _pod_uid(component: str) -> str | None:
    if component.endswith(".slice"):
        head, sep, tail = component[: -len(".slice")].rpartition("-pod")
        if sep and "kubepods" in head:
            uid = tail.replace("_", "-")
            return uid if _is_uid(uid) else None
        return None
    if component.startswith("pod"):
        uid = component[3:]
        return uid if _is_uid(uid) else None
    return None


def _container_id(component: str) -> str | None:
    name = component[: -len(".scope")] if component.endswith(".scope") else component
    if name.startswith("crio-conmon-"):
        return None
    for prefix in _SCOPE_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name if _is_container_id(name) else None


def parse_cgroup_path(path: str) -> CgroupRef | None:
    """The pod (and container) a kubepods cgroup path names, or None for other paths."""
    parts = [p for p in path.strip().split("/") if p]
    seen_kubepods = False
    for i, part in enumerate(parts):
        if part.startswith("kubepods") or "-kubepods" in part:
            seen_kubepods = True
        if not seen_kubepods:
            continue
        uid = _pod_uid(part)
        if uid is None:
            continue
        container = _container_id(parts[i + 1]) if i + 1 < len(parts) else None
        return CgroupRef(pod_uid=uid, container_id=container)
    return None


def parse_proc_cgroup(content: str) -> CgroupRef | None:
    """Parse /proc/<pid>/cgroup; the unified (v2) line wins over v1 controller lines."""
    best: CgroupRef | None = None
    for line in content.splitlines():
        hierarchy, sep, rest = line.partition(":")
        if not sep:
            continue
        _controllers, sep, path = rest.partition(":")
        if not sep:
            continue
        ref = parse_cgroup_path(path)
        if ref is None:
            continue
        if hierarchy == "0":
            return ref
        if best is None or (best.container_id is None and ref.container_id is not None):
            best = ref
    return best
