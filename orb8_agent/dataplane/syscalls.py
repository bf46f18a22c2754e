"""The syscall probe: per (cgroup, syscall) counts and rate-capped alerts."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import mmap
import struct
import threading
import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from orb8_common.errors import ProbeLoadError, UsageError

from . import libbpf, maps, syscall_names
from .abi import MAX_SYSCALL_NR, SYSCALL_COUNT_KEY, SYSCALL_EVENT, SyscallsConfig, SyscallStat
from .models import Alert, SyscallCount, SyscallStats
from .objects import object_path


class Hook(StrEnum):
    """How the handler is attached to raw_syscalls:sys_enter."""

    RAW_TP = "raw_tp"  # raw tracepoint: no argument marshalling
    TP_BTF = "tp_btf"  # BTF-typed raw tracepoint
    TRACEPOINT = "tracepoint"  # classic tracepoint: needs tracefs, copies args


PROGRAMS: dict[Hook, str] = {
    Hook.RAW_TP: "orb8_sys_enter_raw",
    Hook.TP_BTF: "orb8_sys_enter_btf",
    Hook.TRACEPOINT: "orb8_sys_enter_tp",
}

# bpf/syscalls.bpf.c's watch_slots: slot (id mod WATCH_SLOTS) holds 0, the one
# watched id that maps to it, or WATCH_SLOT_SHARED when several do
WATCH_SLOTS = 16384
WATCH_SLOT_SHARED = (1 << 64) - 1

_U8_ONE = b"\x01"
_U8_ZERO = b"\x00"
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


class SyscallCollector:
    """Owns one loaded syscalls.bpf.o.

    Watched cgroups and the alert list can change at any time. Alerts arrive
    through a ring buffer: call :meth:`poll_alerts`, or register
    :meth:`alerts_fd` with an event loop (``loop.add_reader``) and call
    :meth:`poll_alerts` with ``timeout_ms=0`` when it is readable.
    """

    def __init__(
        self,
        *,
        hook: Hook = Hook.RAW_TP,
        alerts_per_second: int = 100,
        ringbuf_bytes: int | None = None,
        path: Path | None = None,
    ) -> None:
        if alerts_per_second < 0:
            raise UsageError("alerts per second must not be negative")
        if ringbuf_bytes is not None and (
            ringbuf_bytes < 4096 or ringbuf_bytes & (ringbuf_bytes - 1)
        ):
            raise UsageError("ring buffer size must be a power of two of at least 4096 bytes")
        self._ringbuf_bytes = ringbuf_bytes
        self._hook = hook
        self._path = path or object_path(name="syscalls")
        self._config = SyscallsConfig(
            alerts_per_second=alerts_per_second, max_syscall_nr=MAX_SYSCALL_NR
        )
        self._obj: libbpf.BpfObject | None = None
        self._link: libbpf.Link | None = None
        self._rb: int | None = None
        self._pending: list[Alert] = []
        self._lost = 0
        self._lock = threading.Lock()
        self._watched: set[int] = set()
        self._alert_nrs: set[int] = set()
        self._ncpu = 1
        self._rb_positions: mmap.mmap | None = None
        self.ringbuf_size = 0
        # keep the callback object alive as long as the ring buffer
        self._sample_cb = libbpf.SAMPLE_FN(self._on_sample)

    # lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Load and attach. Nothing is counted until a cgroup is watched."""
        obj = libbpf.BpfObject(path=self._path)
        try:
            obj.set_rodata(data=self._config)
            for hook, prog in PROGRAMS.items():
                obj.set_autoload(prog=prog, enabled=hook is self._hook)
            if self._ringbuf_bytes:
                libbpf.check(
                    rc=libbpf.lib().bpf_map__set_max_entries(
                        obj.map_ptr(name="alerts"), self._ringbuf_bytes
                    ),
                    what="size the alert ring buffer",
                )
            obj.load()
            self._fds = {
                name: obj.map_fd(name=name)
                for name in (
                    "watched_cgroups",
                    "watch_slots",
                    "alert_syscalls",
                    "syscall_counts",
                    "alerts",
                    "syscall_stats",
                )
            }
            self._ncpu = maps.possible_cpus()
            self.ringbuf_size = int(libbpf.lib().bpf_map__max_entries(obj.map_ptr(name="alerts")))
            rb = libbpf.lib().ring_buffer__new(self._fds["alerts"], self._sample_cb, None, None)
            self._rb = libbpf.check_ptr(ptr=rb, what="create ring buffer reader")
            self._link = obj.attach(prog=PROGRAMS[self._hook])
        except BaseException:
            self._free_rb()
            obj.close()
            raise
        self._obj = obj

    def close(self) -> None:
        if self._link is not None:
            self._link.destroy()
            self._link = None
        self._free_rb()
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def _free_rb(self) -> None:
        if self._rb_positions is not None:
            self._rb_positions.close()
            self._rb_positions = None
        if self._rb is not None:
            libbpf.lib().ring_buffer__free(self._rb)
            self._rb = None

    def __enter__(self) -> SyscallCollector:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _fd(self, name: str) -> int:
        if self._obj is None:
            raise ProbeLoadError("syscall probe is not loaded; call open() first")
        return self._fds[name]

    # configuration -------------------------------------------------------

    @property
    def hook(self) -> Hook:
        return self._hook

    @property
    def watched_cgroups(self) -> frozenset[int]:
        return frozenset(self._watched)

    def watch_cgroup(self, *, cgroup_id: int) -> None:
        # the hash entry first: a set bit must always find it
        maps.update(fd=self._fd("watched_cgroups"), key=_U64.pack(cgroup_id), value=_U8_ONE)
        self._watched.add(cgroup_id)
        self._write_slot(cgroup_id=cgroup_id)

    def unwatch_cgroup(self, *, cgroup_id: int) -> None:
        self._watched.discard(cgroup_id)
        self._write_slot(cgroup_id=cgroup_id)
        maps.delete(fd=self._fd("watched_cgroups"), key=_U64.pack(cgroup_id))

    def _write_slot(self, *, cgroup_id: int) -> None:
        """Rewrite ``cgroup_id``'s watch slot from the watched set."""
        slot = cgroup_id % WATCH_SLOTS
        sharing = [other for other in self._watched if other % WATCH_SLOTS == slot]
        value = 0 if not sharing else sharing[0] if len(sharing) == 1 else WATCH_SLOT_SHARED
        maps.update(fd=self._fd("watch_slots"), key=_U32.pack(slot), value=_U64.pack(value))

    def set_alert_syscalls(self, *, syscalls: Iterable[int | str]) -> None:
        """Replace the alert list; names use this machine's syscall table."""
        wanted: set[int] = set()
        for item in syscalls:
            nr = item if isinstance(item, int) else syscall_names.nr_of(name=item)
            if not 0 <= nr < MAX_SYSCALL_NR:
                raise UsageError(f"syscall number {nr} is out of range")
            wanted.add(nr)
        fd = self._fd("alert_syscalls")
        for nr in wanted - self._alert_nrs:
            maps.update(fd=fd, key=_U32.pack(nr), value=_U8_ONE)
        for nr in self._alert_nrs - wanted:
            maps.update(fd=fd, key=_U32.pack(nr), value=_U8_ZERO)
        self._alert_nrs = wanted

    # reading -------------------------------------------------------------

    def read_counts(self) -> list[SyscallCount]:
        """Per (cgroup, syscall) counts since the previous call."""
        value_size = 8 * self._ncpu
        keys, values, _ = maps.read_batch(
            fd=self._fd("syscall_counts"),
            key_size=SYSCALL_COUNT_KEY.size,
            value_size=value_size,
            delete=True,
        )
        per_cpu = struct.Struct(f"={self._ncpu}Q")
        out: list[SyscallCount] = []
        for (cgroup_id, nr), cpu_counts in zip(
            SYSCALL_COUNT_KEY.iter_unpack(keys), per_cpu.iter_unpack(values), strict=True
        ):
            out.append(SyscallCount(cgroup_id, nr, syscall_names.name_of(nr=nr), sum(cpu_counts)))
        return out

    def alerts_fd(self) -> int:
        """An epoll fd that becomes readable when alerts are waiting."""
        if self._rb is None:
            raise ProbeLoadError("syscall probe is not loaded")
        return int(libbpf.lib().ring_buffer__epoll_fd(self._rb))

    def poll_alerts(self, *, timeout_ms: int = 0) -> list[Alert]:
        """Alerts that arrived, waiting up to ``timeout_ms`` for the first one."""
        if self._rb is None:
            raise ProbeLoadError("syscall probe is not loaded")
        with self._lock:
            rc = libbpf.lib().ring_buffer__poll(self._rb, timeout_ms)
            if rc < 0 and rc != -4:  # EINTR: a signal arrived; return what we have
                raise libbpf.error(what="poll the alert ring buffer", code=rc)
            out, self._pending = self._pending, []
        return out

    async def next_alerts(self, *, max_wait: float) -> list[Alert]:
        """Wait without blocking the event loop until alerts arrive or ``max_wait`` seconds pass."""
        alerts = self.poll_alerts(timeout_ms=0)
        if alerts:
            return alerts
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = self.alerts_fd()
        loop.add_reader(fd, ready.set)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), max_wait)
        finally:
            loop.remove_reader(fd)
        return self.poll_alerts(timeout_ms=0)

    def _on_sample(self, ctx: int | None, data: int | None, size: int) -> int:
        try:
            if not data or size < SYSCALL_EVENT.size:
                self._lost += 1
                return 0
            raw = ctypes.string_at(data, SYSCALL_EVENT.size)
            ts, cgroup_id, pid, tgid, nr, comm = SYSCALL_EVENT.unpack(raw)
            now_mono = time.monotonic_ns()
            self._pending.append(
                Alert(
                    pid=pid,
                    tgid=tgid,
                    comm=comm.split(b"\0", 1)[0].decode(errors="replace"),
                    cgroup_id=cgroup_id,
                    nr=nr,
                    name=syscall_names.name_of(nr=nr),
                    monotonic_ns=ts,
                    timestamp=time.time() - (now_mono - ts) / 1e9,
                )
            )
        except Exception:
            # never let an exception unwind into libbpf's C frame
            self._lost += 1
        return 0

    def ringbuf_used_bytes(self) -> int:
        """Bytes written into the alert ring buffer and not consumed yet.

        Reads the kernel's consumer and producer positions (the first two
        pages of the ring buffer map, mapped read-only).
        """
        fd = self._fd("alerts")
        if self._rb_positions is None:
            page = mmap.PAGESIZE
            self._rb_positions = mmap.mmap(fd, 2 * page, mmap.MAP_SHARED, mmap.PROT_READ)
        consumer: int = _U64.unpack_from(self._rb_positions, 0)[0]
        producer: int = _U64.unpack_from(self._rb_positions, mmap.PAGESIZE)[0]
        return max(0, producer - consumer)

    def stats(self) -> SyscallStats:
        v = maps.sum_percpu_array(fd=self._fd("syscall_stats"), slots=len(SyscallStat))
        return SyscallStats(
            events=v[SyscallStat.EVENTS],
            rate_limited=v[SyscallStat.RATE_LIMITED],
            ringbuf_full=v[SyscallStat.RINGBUF_FULL],
            count_map_full=v[SyscallStat.COUNT_MAP_FULL],
            lost_in_user_space=self._lost,
        )
