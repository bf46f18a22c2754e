"""Attach and detach tc (clsact) BPF filters, and remember what we did.

Every filter orb8 adds carries a fixed handle and a per-agent priority, and
each interface we touch is written to a small state file under the agent's
run directory. A later start of the same agent id reads that file and removes
what a killed run left: its filters, and the clsact qdisc where we created it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from orb8_common.errors import ProbeLoadError, UsageError
from orb8_common.procfs import pid_alive

from . import libbpf
from .libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS, TcHook, TcOpts

TC_HANDLE = 0x0B8
DEFAULT_RUN_DIR = Path(os.environ.get("ORB8_RUN_DIR", "/run/orb8"))


def priority_for(*, agent_id: str, base: int = 0xB800) -> int:
    """A stable tc priority per agent id, so two agents can share an interface.

    Each probe has its own ``base`` (flows 0xB800, DNS 0xB900), so one agent's
    filters of different probes never share a priority.
    """
    return base | (zlib.crc32(agent_id.encode()) & 0xFF)


def ifindex_of(*, interface: str) -> int:
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise UsageError(f"unknown interface {interface!r}") from None


def _hook(ifindex: int, point: int) -> TcHook:
    return TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=point, parent=0)


def _opts(*, handle: int, priority: int, prog_fd: int = 0) -> TcOpts:
    return TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, handle=handle, priority=priority)


def create_clsact(*, ifindex: int) -> bool:
    """Ensure a clsact qdisc exists; True if this call created it."""
    rc = libbpf.lib().bpf_tc_hook_create(ctypes.byref(_hook(ifindex, BPF_TC_INGRESS)))
    if rc == -errno.EEXIST:
        return False
    libbpf.check(rc=rc, what=f"create clsact qdisc on ifindex {ifindex}")
    return True


def destroy_clsact(*, ifindex: int) -> None:
    hook = _hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)
    rc = libbpf.lib().bpf_tc_hook_destroy(ctypes.byref(hook))
    if rc not in (0, -errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        libbpf.check(rc=rc, what=f"remove clsact qdisc on ifindex {ifindex}")


def attach_filter(*, ifindex: int, point: int, prog_fd: int, priority: int) -> None:
    opts = _opts(handle=TC_HANDLE, priority=priority, prog_fd=prog_fd)
    libbpf.check(
        rc=libbpf.lib().bpf_tc_attach(ctypes.byref(_hook(ifindex, point)), ctypes.byref(opts)),
        what=f"attach tc filter on ifindex {ifindex}",
    )


def detach_filter(*, ifindex: int, point: int, priority: int) -> bool:
    """Remove our filter; False if it was not there."""
    opts = _opts(handle=TC_HANDLE, priority=priority)
    rc = libbpf.lib().bpf_tc_detach(ctypes.byref(_hook(ifindex, point)), ctypes.byref(opts))
    if rc in (-errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        return False
    libbpf.check(rc=rc, what=f"detach tc filter on ifindex {ifindex}")
    return True


def query_filter(*, ifindex: int, point: int, priority: int) -> int | None:
    """The program id behind our filter, or None."""
    opts = _opts(handle=TC_HANDLE, priority=priority)
    rc = libbpf.lib().bpf_tc_query(ctypes.byref(_hook(ifindex, point)), ctypes.byref(opts))
    return int(opts.prog_id) if rc == 0 else None


@dataclass
class Attachment:
    interface: str
    ifindex: int
    created_qdisc: bool


class TcState:
    """The state file of one agent id: which interfaces carry our filters."""

    def __init__(
        self, *, agent_id: str, run_dir: Path = DEFAULT_RUN_DIR, priority: int | None = None
    ) -> None:
        if not agent_id or "/" in agent_id or agent_id.startswith("."):
            raise UsageError(f"invalid agent id {agent_id!r}")
        self.agent_id = agent_id
        self.priority = priority_for(agent_id=agent_id) if priority is None else priority
        # the priority a previous owner used, read back by claim() (sweeps need it)
        self.claimed_priority = self.priority
        self.path = run_dir / agent_id / "tc.json"
        self.attachments: dict[str, Attachment] = {}

    def claim(self) -> list[Attachment]:
        """Take over the state file; returns what a dead previous owner left."""
        left: list[Attachment] = []
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                owner = int(data.get("pid", 0))
                self.claimed_priority = int(data.get("priority", self.priority))
                items = [Attachment(**a) for a in data.get("attachments", [])]
            except (ValueError, TypeError) as err:
                raise ProbeLoadError(f"corrupt state file {self.path}: {err}; remove it") from err
            if owner and owner != os.getpid() and pid_alive(owner):
                raise ProbeLoadError(
                    f"agent id {self.agent_id!r} is in use by running pid {owner}; "
                    "stop it or pick another agent id"
                )
            left = items
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.save()
        return left

    def save(self) -> None:
        data = {
            "pid": os.getpid(),
            "priority": self.priority,
            "attachments": [asdict(a) for a in self.attachments.values()],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def remove_attachment(*, attachment: Attachment, priority: int) -> None:
    """Remove our filters from one interface, and clsact if we created it."""
    try:
        current = socket.if_nametoindex(attachment.interface)
    except OSError:
        return  # interface gone: the kernel dropped its qdisc and filters
    if current != attachment.ifindex:
        return  # a different interface now carries that name
    for point in (BPF_TC_INGRESS, BPF_TC_EGRESS):
        detach_filter(ifindex=current, point=point, priority=priority)
    if attachment.created_qdisc:
        destroy_clsact(ifindex=current)


def sweep_dead(*, prefix: str, run_dir: Path = DEFAULT_RUN_DIR) -> list[str]:
    """Clean up after every dead agent whose id starts with ``prefix``.

    For short-lived users such as ``orb8 trace``, which take a fresh agent id
    per run (``cli-<pid>``) so that several can run at once. Returns the ids
    that were swept; state of live owners is left alone.
    """
    swept: list[str] = []
    if not run_dir.is_dir():
        return swept
    for state_dir in sorted(run_dir.glob(f"{prefix}*")):
        if not (state_dir / "tc.json").is_file():
            continue
        state = TcState(agent_id=state_dir.name, run_dir=run_dir)
        try:
            left = state.claim()
        except ProbeLoadError:
            continue  # owner still running
        for attachment in left:
            remove_attachment(attachment=attachment, priority=state.claimed_priority)
        state.release()
        swept.append(state_dir.name)
    return swept
