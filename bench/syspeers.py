"""Syscall variants for `make bench`: what is attached while a pinned
getpid()/read() loop runs in the watched cgroup (or, for orb8 unwatched, in a
cgroup the probe does not watch).

A variant is a context manager given the loop's pid (the loop is held at a
gate until the variant is attached) and returns the command prefix the loop
runs under (empty for all but `perf trace`, which starts the loop itself).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_dev.cgroups import Cgroup

from .netpeers import _start, _stop, need


@dataclass(frozen=True)
class SysVariant:
    name: str
    attach: Callable[[int], contextlib.AbstractContextManager[None]]
    watched: bool = True  # does the loop run in the cgroup the tool watches
    prefix: tuple[str, ...] = ()
    calls_divisor: int = 1  # tools that cost microseconds per call get fewer calls


@contextlib.contextmanager
def nothing(pid: int) -> Iterator[None]:
    del pid
    yield


@contextlib.contextmanager
def empty(reference: Path, prog: str, pid: int) -> Iterator[None]:
    del pid
    obj = libbpf.BpfObject(path=reference)
    for other in ("ref_count", "empty_raw_tp", "empty_btf"):
        obj.set_autoload(prog=other, enabled=other == prog)
    obj.load()
    link = obj.attach(prog=prog)
    try:
        yield
    finally:
        link.destroy()
        obj.close()


@contextlib.contextmanager
def orb8(hook: Hook, watched: Cgroup, pid: int) -> Iterator[None]:
    del pid
    with SyscallCollector(hook=hook) as c:
        c.watch_cgroup(cgroup_id=watched.id)
        c.set_alert_syscalls(syscalls=["ptrace", "mount"])
        yield
        c.read_counts()


@contextlib.contextmanager
def syscount(pid: int) -> Iterator[None]:
    # `syscount -c CG` fails in Debian's libbpf-tools 0.26 (its cgroup map is
    # never created: EBADF), so the loop's process is the filter instead.
    # stdbuf: syscount block-buffers stdout into a pipe, its start line would never come
    proc = _start(["stdbuf", "-oL", need("syscount"), "-p", str(pid)], "Tracing", stream="stdout")
    try:
        yield
    finally:
        _stop(proc)


@contextlib.contextmanager
def bpftrace(watched: Cgroup, pid: int) -> Iterator[None]:
    del pid
    # cgroupid("path") fails here (EOVERFLOW from name_to_handle_at in 0.17);
    # the numeric id is the same filter
    script = (
        f"tracepoint:raw_syscalls:sys_enter /cgroup == {watched.id}/ {{ @[args->id] = count(); }}"
    )
    proc = _start([need("bpftrace"), "-e", script], "Attaching", stream="stdout")
    try:
        yield
    finally:
        _stop(proc)


@contextlib.contextmanager
def perf_ready(pid: int) -> Iterator[None]:
    """perf trace starts the loop itself (see ``prefix``); only check it is here."""
    del pid
    need("perf")
    yield


def variants(*, reference: Path, watched: Cgroup) -> list[SysVariant]:
    out = [
        SysVariant("none", nothing),
        SysVariant("empty_raw_tp", functools.partial(empty, reference, "empty_raw_tp")),
        SysVariant("empty_tp_btf", functools.partial(empty, reference, "empty_btf")),
    ]
    for hook in (Hook.RAW_TP, Hook.TP_BTF):
        probe = functools.partial(orb8, hook, watched)
        out.append(SysVariant(f"orb8_{hook.value}_unwatched", probe, watched=False))
        out.append(SysVariant(f"orb8_{hook.value}_watched", probe))
    out.append(SysVariant("syscount", syscount))
    out.append(SysVariant("bpftrace", functools.partial(bpftrace, watched)))
    out.append(
        SysVariant(
            "perf_trace",
            perf_ready,
            prefix=("perf", "trace", "-s", "-o", "/dev/null", "--"),
            calls_divisor=50,
        )
    )
    return out
