"""Pre-flight checks: can this node run orb8's probes, and if not, why not.

The report is plain data: :meth:`PreflightReport.to_status` gives exactly the
``kernel``/``capabilities``/``probes`` fields of NodeAgentConfig status.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orb8_common.errors import Orb8Error

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
# The newest kernel feature a probe uses: bpf_ktime_get_coarse_ns (flows), 5.11.
MIN_KERNEL = (5, 11)
BPFFS_PATH = Path("/sys/fs/bpf")
TRACEFS_PATH = Path("/sys/kernel/tracing")

# Capabilities the agent may use, by bit number (linux/capability.h).
CAPABILITIES: dict[str, int] = {
    "NET_ADMIN": 12,  # tc qdiscs and filters
    "SYS_ADMIN": 21,  # BPF on kernels before 5.8, mounting bpffs/tracefs
    "SYS_RESOURCE": 24,  # RLIMIT_MEMLOCK on kernels before 5.11
    "PERFMON": 38,  # tracing programs (5.8+)
    "BPF": 39,  # loading programs and maps (5.8+)
}


@dataclass
class Check:
    name: str
    ok: bool
    message: str = ""
    remedy: str = ""


@dataclass
class ProbeStatus:
    name: str
    loadable: bool
    message: str = ""


@dataclass
class KernelInfo:
    release: str
    btf: bool


@dataclass
class PreflightReport:
    kernel: KernelInfo
    capabilities: list[str]
    probes: list[ProbeStatus]
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and all(p.loadable for p in self.probes)

    @property
    def any_probe_loadable(self) -> bool:
        return any(p.loadable for p in self.probes)

    def to_status(self) -> dict[str, Any]:
        """The NodeAgentConfig status fields: kernel, capabilities, probes."""
        return {
            "kernel": asdict(self.kernel),
            "capabilities": list(self.capabilities),
            "probes": [asdict(p) for p in self.probes],
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.to_status()
        data["checks"] = [asdict(c) for c in self.checks]
        data["ok"] = self.ok
        return data


def effective_capabilities(*, status: Path = Path("/proc/self/status")) -> list[str]:
    """Names of the agent-relevant capabilities in this process's CapEff."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return [name for name, bit in CAPABILITIES.items() if mask >> bit & 1]
    return []


def _mounts() -> dict[str, str]:
    """mount point → fs type, from /proc/self/mountinfo."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        out[left.split(" ")[4]] = right.split(" ", 1)[0]
    return out


def _mount(fstype: str, target: Path) -> str:
    """Mount a pseudo filesystem; returns an error text or ''."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    if libc.mount(fstype.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        return os.strerror(ctypes.get_errno())
    return ""


def check_fs(*, fstype: str, path: Path, mount: bool, purpose: str) -> Check:
    name = f"{fstype} mounted"
    if _mounts().get(str(path)) == fstype:
        return Check(name, True, f"{path}")
    remedy = f"mount -t {fstype} {fstype} {path}  ({purpose})"
    if not mount:
        return Check(name, False, f"{fstype} is not mounted at {path}", remedy)
    err = _mount(fstype, path)
    if err:
        return Check(
            name, False, f"{fstype} is not mounted at {path} and mounting failed: {err}", remedy
        )
    return Check(name, True, f"mounted {fstype} at {path}")


def _probe_flows() -> ProbeStatus:
    from orb8_agent.dataplane import libbpf
    from orb8_agent.dataplane.objects import object_path

    try:
        obj = libbpf.BpfObject(path=object_path(name="flows"))
        try:
            obj.load()
        finally:
            obj.close()
    except Orb8Error as err:
        return ProbeStatus("flows", False, str(err))
    return ProbeStatus("flows", True, "")


def _probe_hostflows() -> ProbeStatus:
    """The hostNetwork pods' probe (cgroup_skb): loads, attaches nowhere."""
    from orb8_agent.dataplane.hostflows import HostFlowCollector

    try:
        collector = HostFlowCollector()
        collector.open()
        collector.close()
    except Orb8Error as err:
        return ProbeStatus("hostflows", False, str(err))
    return ProbeStatus("hostflows", True, "")


def _probe_syscalls() -> ProbeStatus:
    from orb8_agent.dataplane.syscalls import Hook, SyscallCollector

    try:
        # open() loads and attaches; with no watched cgroup it counts nothing
        collector = SyscallCollector(hook=Hook.RAW_TP)
        collector.open()
        collector.close()
    except Orb8Error as err:
        return ProbeStatus("syscalls", False, str(err))
    return ProbeStatus("syscalls", True, "")


def _probe_tcp() -> ProbeStatus:
    from orb8_agent.dataplane.tcphealth import TcpHealthCollector

    try:
        # open() attaches every tracepoint; with no watched netns it counts nothing
        collector = TcpHealthCollector()
        collector.open()
        collector.close()
    except Orb8Error as err:
        return ProbeStatus("tcp", False, str(err))
    return ProbeStatus("tcp", True, "")


def hooks_check() -> Check:
    """What orb8 hooks into: tc and tracepoints, never kprobes or fentry."""
    from orb8_agent.dataplane.tcphealth import TRACEPOINTS

    return Check(
        "probe hooks",
        True,
        "tc classifiers (flows), raw_syscalls:sys_enter (syscalls), tracepoints "
        f"{', '.join(TRACEPOINTS)} via tp_btf (tcp); kprobes and fentry are never used "
        "(not available on every node)",
    )


def run_preflight(*, mount: bool = True, load_probes: bool = True) -> PreflightReport:
    """Check the node; mounts bpffs and tracefs when missing and ``mount`` is set."""
    release = os.uname().release
    btf = BTF_PATH.is_file()
    caps = effective_capabilities()
    checks = [
        _kernel_check(release),
        Check(
            "BTF",
            btf,
            str(BTF_PATH) if btf else f"{BTF_PATH} is missing",
            "" if btf else "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
        check_fs(fstype="bpf", path=BPFFS_PATH, mount=mount, purpose="pins and cleanup state"),
        check_fs(fstype="tracefs", path=TRACEFS_PATH, mount=mount, purpose="classic tracepoints"),
        _caps_check(caps),
        hooks_check(),
    ]
    probes: list[ProbeStatus] = []
    if load_probes:
        probes = [_probe_flows(), _probe_syscalls(), _probe_tcp(), _probe_hostflows()]
    return PreflightReport(KernelInfo(release, btf), caps, probes, checks)


def _kernel_check(release: str) -> Check:
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return Check("kernel version", False, f"cannot parse {release!r}", "")
    ok = (major, minor) >= MIN_KERNEL
    return Check(
        "kernel version",
        ok,
        release,
        ""
        if ok
        else "orb8 needs Linux 5.11+ (bpf_ktime_get_coarse_ns 5.11, ring buffer and CAP_BPF 5.8,"
        " batch map ops 5.6)",
    )


def _caps_check(caps: list[str]) -> Check:
    have = set(caps)
    if "SYS_ADMIN" in have or {"BPF", "PERFMON", "NET_ADMIN"} <= have:
        return Check("capabilities", True, ",".join(caps))
    missing = sorted({"BPF", "PERFMON", "NET_ADMIN"} - have)
    return Check(
        "capabilities",
        False,
        f"missing {','.join(missing)}",
        "run as root, or add CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN to the agent",
    )
