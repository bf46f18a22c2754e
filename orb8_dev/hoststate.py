"""What a local node changes on the host, recorded before and undone after.

A kubelet, containerd and the CNI plugins change things outside their state
directories: kernel settings (the bridge plugin turns on ``ip_forward``, the
kubelet sets ``vm.overcommit_memory``, ``kernel.panic``…), a few fixed paths
(``/var/lib/kubelet/device-plugins``, ``/var/log/containers``, containerd's
shim sockets in ``/run/containerd``), mounts, cgroups and processes.

Several local nodes may run at once (worktrees, test sessions). The first
node up records the host's baseline in ``/run/orb8/host-baseline.json``;
each node registers itself; the last one down restores the baseline. Each
node always removes its own mounts, cgroups and processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from orb8_common.procfs import pid_alive
from orb8_dev.nodenet import LOCK_DIR, NodeNetwork, host_lock

# Kernel settings the kubelet (protectKernelDefaults: false) and the CNI
# bridge plugin change.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/default/forwarding",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/bridge/bridge-nf-call-iptables",  # kube-proxy (kubeproxy.py) needs it on
)
# Fixed paths a kubelet or containerd writes whatever its flags say.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/cni",
    "/usr/libexec/kubernetes",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
BASELINE = LOCK_DIR / "host-baseline.json"
REGISTRY = LOCK_DIR / "nodes"


@dataclass(frozen=True)
class HostSnapshot:
    """The host state a node may touch, for before/after comparisons."""

    sysctls: dict[str, str]
    paths: dict[str, bool]
    links: frozenset[str]
    mounts: frozenset[str]
    cgroups: frozenset[str] = field(default_factory=frozenset)


def read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = Path("/proc/sys", name).read_text().strip()
    return values


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys", name)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value + "\n")


def mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4]
        points.append(point.encode().decode("unicode_escape"))
    return points


def snapshot(*, under: list[Path] | None = None) -> HostSnapshot:
    """Kernel settings, fixed paths, interface names, mounts (all, or only under
    ``under``) and every ``orb8-*`` cgroup in every hierarchy."""
    roots = [str(path) for path in (under or [])]
    mounts = [m for m in mount_points() if not roots or any(m.startswith(r) for r in roots)]
    return HostSnapshot(
        sysctls=read_sysctls(),
        paths={path: Path(path).exists() for path in HOST_PATHS},
        links=frozenset(os.listdir("/sys/class/net")),
        mounts=frozenset(mounts),
        cgroups=frozenset(str(p) for p in CGROUP_ROOT.glob("*/orb8-*") if p.is_dir()),
    )


def register(*, net: NodeNetwork, state_dir: Path) -> None:
    """Record the host baseline if no other node is up, and register this node."""
    with host_lock():
        REGISTRY.mkdir(parents=True, exist_ok=True)
        _drop_stale()
        if not any(REGISTRY.iterdir()) or not BASELINE.exists():
            BASELINE.write_text(
                json.dumps(
                    {
                        "sysctls": read_sysctls(),
                        "paths": {path: Path(path).exists() for path in HOST_PATHS},
                    }
                )
            )
        (REGISTRY / f"{net.index}.json").write_text(json.dumps({"state_dir": str(state_dir)}))


def unregister(*, net: NodeNetwork) -> bool:
    """Unregister; if this was the last node, restore the baseline. True when restored."""
    with host_lock():
        (REGISTRY / f"{net.index}.json").unlink(missing_ok=True)
        _drop_stale()
        if REGISTRY.is_dir() and any(REGISTRY.iterdir()):
            return False
        try:
            baseline = json.loads(BASELINE.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        write_sysctls(baseline["sysctls"])
        for path, existed in baseline["paths"].items():
            if not existed:
                subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)
        BASELINE.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            REGISTRY.rmdir()
        return True


def _drop_stale() -> None:
    """Forget registrations whose node is gone (its state dir has no pids file)."""
    if not REGISTRY.is_dir():
        return
    for entry in REGISTRY.glob("*.json"):
        try:
            state_dir = Path(json.loads(entry.read_text())["state_dir"])
        except (OSError, json.JSONDecodeError, KeyError):
            entry.unlink(missing_ok=True)
            continue
        if not (state_dir / "node.json").exists():
            entry.unlink(missing_ok=True)


def unmount_under(*, root: Path) -> None:
    """Unmount everything mounted at or below ``root``, deepest first."""
    prefix = str(root).rstrip("/")
    for _ in range(5):
        points = [p for p in mount_points() if p == prefix or p.startswith(prefix + "/")]
        if not points:
            return
        for point in sorted(set(points), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def cgroup_dirs(*, parent: str) -> list[Path]:
    """``parent`` (e.g. ``/orb8-0``) in every mounted hierarchy, v1 and v2."""
    dirs = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        candidate = hierarchy / parent.lstrip("/")
        if candidate.is_dir():
            dirs.append(candidate)
    return dirs


def kill_cgroup_processes(*, parent: str) -> None:
    """SIGKILL every process left in ``parent``'s subtree, in every hierarchy."""
    for base in cgroup_dirs(parent=parent):
        for procs in base.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def remove_cgroups(*, parent: str, timeout: float = 20.0) -> list[Path]:
    """rmdir ``parent``'s subtree bottom-up in every hierarchy; return what stayed."""
    deadline = time.monotonic() + timeout
    left: list[Path] = []
    while True:
        kill_cgroup_processes(parent=parent)
        left = []
        for base in cgroup_dirs(parent=parent):
            for directory in sorted(
                (p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                try:
                    directory.rmdir()
                except OSError:
                    left.append(directory)
            try:
                base.rmdir()
            except OSError:
                left.append(base)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def processes_mentioning(*, text: str) -> list[int]:
    """Pids whose command line contains ``text`` (not this process or its parents)."""
    mine = {os.getpid(), *_ancestors()}
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _ancestors() -> list[int]:
    pids = []
    pid = os.getppid()
    while pid > 1:
        pids.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def kill_pids(pids: list[int], *, grace_s: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
