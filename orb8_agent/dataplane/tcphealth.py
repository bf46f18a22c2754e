"""The TCP health probe: retransmits, resets and connect latency per socket 4-tuple.

tcphealth.bpf.o hangs off five tracepoints (tcp_retransmit_skb,
tcp_retransmit_synack, tcp_send_reset, tcp_receive_reset,
inet_sock_set_state), never kprobes or fentry. It counts only sockets in
watched network namespaces (the target pods'), or in every namespace for
``orb8 trace --local``. :meth:`TcpHealthCollector.read` drains the kernel
map: each call returns the deltas since the previous one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import socket
import struct
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType

from orb8_common.errors import ProbeLoadError

from . import libbpf, maps
from .models import TcpHealth
from .objects import object_path

# struct tcp_health_key: saddr[16] daddr[16] netns sport dport family pad[3]
TCP_HEALTH_KEY = struct.Struct("=16s16sIHHB3x")
# struct tcp_health_value: retrans resets_sent resets_received connects ns_total ns_max
TCP_HEALTH_VALUE = struct.Struct("=QQQQQQ")
_U32 = struct.Struct("=I")
LOG = logging.getLogger(__name__)


class TcpHealthStat(IntEnum):
    EVENTS = 0
    MAP_FULL = 1
    START_MAP_FULL = 2
    START_MISSING = 3
    NO_TUPLE = 4


class TcpHealthConfig(ctypes.Structure):
    _fields_ = [("all_netns", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class TcpHook(StrEnum):
    """How the handlers are attached to the tracepoints."""

    TP_BTF = "tp_btf"  # BTF-typed raw tracepoint (default)
    RAW_TP = "raw_tp"  # raw tracepoint: the same handlers, untyped arguments


TRACEPOINTS = (
    "tcp_retransmit_skb",
    "tcp_retransmit_synack",
    "tcp_send_reset",
    "tcp_receive_reset",
    "inet_sock_set_state",
)
_PROGRAM_STEMS = {
    "tcp_retransmit_skb": "orb8_tcp_retransmit",
    "tcp_retransmit_synack": "orb8_tcp_retransmit_synack",
    "tcp_send_reset": "orb8_tcp_send_reset",
    "tcp_receive_reset": "orb8_tcp_receive_reset",
    "inet_sock_set_state": "orb8_tcp_state",
}


def program_name(*, tracepoint: str, hook: TcpHook) -> str:
    suffix = "btf" if hook is TcpHook.TP_BTF else "raw"
    return f"{_PROGRAM_STEMS[tracepoint]}_{suffix}"


def netns_of_pid(*, pid: int) -> int:
    """The network namespace inode of a process (what the probe keys sockets by)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError as err:
        raise ProbeLoadError(f"cannot read the network namespace of pid {pid}: {err}") from err


def _address(raw: bytes, family: int) -> str:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    addr = ipaddress.IPv6Address(raw)
    # a dual-stack socket talking IPv4 holds ::ffff:a.b.c.d; the wire (and
    # the flow probe) sees plain IPv4
    mapped = addr.ipv4_mapped
    return str(mapped) if mapped is not None else str(addr)


class TcpHealthCollector:
    """Owns one loaded tcphealth.bpf.o. Blocking but short calls."""

    def __init__(
        self,
        *,
        hook: TcpHook = TcpHook.TP_BTF,
        all_netns: bool = False,
        max_entries: int | None = None,
        path: Path | None = None,
        agent_id: str = "agent",
        pin_dir: Path | None = None,
    ) -> None:
        # With a pin directory the health map outlives the process: what a
        # killed agent had not drained yet is still there for the next one.
        self._pin = pin_dir / agent_id / "tcp_health" if pin_dir is not None else None
        self._hook = hook
        self._path = path or object_path(name="tcphealth")
        self._config = TcpHealthConfig(all_netns=1 if all_netns else 0)
        self._max_entries = max_entries
        self._obj: libbpf.BpfObject | None = None
        self._links: list[libbpf.Link] = []
        self._watched: set[int] = set()
        self._fds: dict[str, int] = {}

    # lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Load and attach every tracepoint. Nothing is counted until a netns is watched."""
        try:
            self._load()
        except (ProbeLoadError, OSError) as err:
            if self._pin is None:
                raise
            if self._pin.exists():
                # a pinned map of another shape (an older version): start afresh
                self._pin.unlink()
                with contextlib.suppress(ProbeLoadError, OSError):
                    self._load()
                    return
            LOG.warning("TCP health map not pinned at %s (%s); running without", self._pin, err)
            self._pin = None
            self._load()

    @property
    def pin_path(self) -> Path | None:
        return self._pin

    def _load(self) -> None:
        obj = libbpf.BpfObject(path=self._path)
        try:
            obj.set_rodata(data=self._config)
            if self._pin is not None:
                self._pin.parent.mkdir(parents=True, exist_ok=True)
                obj.set_pin_path(map_name="tcp_health", path=self._pin)
            for tp in TRACEPOINTS:
                for hook in TcpHook:
                    obj.set_autoload(
                        prog=program_name(tracepoint=tp, hook=hook), enabled=hook is self._hook
                    )
            if self._max_entries:
                libbpf.check(
                    rc=libbpf.lib().bpf_map__set_max_entries(
                        obj.map_ptr(name="tcp_health"), self._max_entries
                    ),
                    what="size the tcp_health map",
                )
            obj.load()
            self._fds = {
                name: obj.map_fd(name=name)
                for name in ("watched_netns", "tcp_health", "connect_start", "tcp_health_stats")
            }
            for tp in TRACEPOINTS:
                self._links.append(obj.attach(prog=program_name(tracepoint=tp, hook=self._hook)))
        except BaseException:
            for link in self._links:
                link.destroy()
            self._links.clear()
            obj.close()
            raise
        self._obj = obj

    def close(self) -> None:
        for link in self._links:
            link.destroy()
        self._links.clear()
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        if self._pin is not None:
            self._pin.unlink(missing_ok=True)  # a clean stop drained and reported everything
            with contextlib.suppress(OSError):
                self._pin.parent.rmdir()
        self._watched.clear()

    def __enter__(self) -> TcpHealthCollector:
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
            raise ProbeLoadError("TCP health probe is not loaded; call open() first")
        return self._fds[name]

    # configuration -------------------------------------------------------

    @property
    def hook(self) -> TcpHook:
        return self._hook

    @property
    def watched_netns(self) -> frozenset[int]:
        return frozenset(self._watched)

    def set_watched_netns(self, *, inodes: set[int] | frozenset[int]) -> None:
        """Count the sockets of exactly these network namespaces (by inode)."""
        fd = self._fd("watched_netns")
        for inode in set(inodes) - self._watched:
            maps.update(fd=fd, key=_U32.pack(inode), value=b"\x01")
        for inode in self._watched - set(inodes):
            maps.delete(fd=fd, key=_U32.pack(inode))
        self._watched = set(inodes)

    # reading -------------------------------------------------------------

    def read(self) -> list[TcpHealth]:
        """Per-socket-tuple deltas since the previous call (the kernel map is drained)."""
        keys, values, count = maps.read_batch(
            fd=self._fd("tcp_health"),
            key_size=TCP_HEALTH_KEY.size,
            value_size=TCP_HEALTH_VALUE.size,
            delete=True,
        )
        if not count:
            return []
        out: list[TcpHealth] = []
        for (saddr, daddr, netns, sport, dport, family), (
            retrans,
            rst_sent,
            rst_recv,
            connects,
            ns_total,
            ns_max,
        ) in zip(
            TCP_HEALTH_KEY.iter_unpack(keys), TCP_HEALTH_VALUE.iter_unpack(values), strict=True
        ):
            out.append(
                TcpHealth(
                    netns=netns,
                    local_ip=_address(saddr, family),
                    local_port=sport,
                    remote_ip=_address(daddr, family),
                    remote_port=dport,
                    retransmits=retrans,
                    resets_sent=rst_sent,
                    resets_received=rst_recv,
                    connects=connects,
                    connect_ns_total=ns_total,
                    connect_ns_max=ns_max,
                )
            )
        return out

    def stats(self) -> dict[str, int]:
        """Cumulative probe counters: events, map_full, start_map_full, start_missing, no_tuple."""
        values = maps.sum_percpu_array(fd=self._fd("tcp_health_stats"), slots=len(TcpHealthStat))
        return {stat.name.lower(): values[stat] for stat in TcpHealthStat}

    def prog_fds(self) -> dict[str, int]:
        """tracepoint → the attached program's fd (the bench reads run_time_ns/run_cnt)."""
        if self._obj is None:
            return {}
        obj = self._obj
        return {
            tp: obj.prog_fd(name=program_name(tracepoint=tp, hook=self._hook)) for tp in TRACEPOINTS
        }
