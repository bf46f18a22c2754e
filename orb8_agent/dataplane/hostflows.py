"""The hostNetwork flow probe: cgroup_skb programs on pod cgroups, flows per cgroup.

A hostNetwork pod shares the node's interfaces and address, so the tc probe
on a veth cannot see it as a pod of its own. ``hostflows.bpf.o`` runs on the
socket side instead: attached to a pod's cgroup v2 directory, it counts each
packet of a socket under that directory, keyed by the directory's id.

Attachments are bpf_links held by this process: they go away with
:meth:`HostFlowCollector.detach`, :meth:`close`, or the process itself (a
SIGKILLed agent leaves nothing attached).
"""

from __future__ import annotations

import ctypes
import gc
import os
import socket
import struct
import threading
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType

from orb8_common.errors import ProbeLoadError, UsageError

from . import libbpf, maps
from .abi import DIR_INGRESS, FLOW_VALUE
from .models import Flow
from .objects import object_path

INGRESS_PROG = "orb8_hostflows_ingress"
EGRESS_PROG = "orb8_hostflows_egress"
# struct host_flow_key: cgroup_id saddr[16] daddr[16] sport dport proto family direction pad
HOST_FLOW_KEY = struct.Struct("=Q16s16sHHBBBx")
_WATCHED_KEY = struct.Struct("=Q")
_WATCHED_ON = b"\x01"


class HostFlowStat(IntEnum):
    NOT_IP = 0
    MALFORMED = 1
    UNWATCHED = 2
    MAP_FULL = 3


class HostFlowsConfig(ctypes.Structure):
    _fields_ = [("max_level", ctypes.c_uint32)]


@dataclass(frozen=True, slots=True)
class HostFlowStats:
    """Cumulative counters of the hostNetwork probe since it was loaded."""

    not_ip: int
    malformed: int
    unwatched: int
    map_full: int


@dataclass
class _Attachment:
    cgroup_id: int
    links: list[libbpf.Link]


class HostFlowCollector:
    """Owns one loaded hostflows.bpf.o and its cgroup attachments.

    Flows it returns carry ``cgroup_id`` (the attached directory's id),
    ``ifindex`` 0, and a direction relative to the pod (``egress`` = the pod
    sent it). Bytes are IP packet lengths (no link-layer header).
    """

    def __init__(self, *, max_level: int = 8, path: Path | None = None) -> None:
        if not 1 <= max_level <= 8:
            raise UsageError("max_level must be between 1 and 8")
        self._path = path or object_path(name="hostflows")
        self._config = HostFlowsConfig(max_level=max_level)
        self._obj: libbpf.BpfObject | None = None
        self._lock = threading.Lock()
        self._attached: dict[Path, _Attachment] = {}
        self._flows_fd = self._watched_fd = self._stats_fd = -1

    # lifecycle -----------------------------------------------------------

    def open(self) -> None:
        obj = libbpf.BpfObject(path=self._path)
        try:
            obj.set_rodata(data=self._config)
            obj.load()
            self._flows_fd = obj.map_fd(name="host_flows")
            self._watched_fd = obj.map_fd(name="watched")
            self._stats_fd = obj.map_fd(name="host_stats")
        except BaseException:
            obj.close()
            raise
        self._obj = obj

    def close(self) -> None:
        """Detach from every cgroup and unload."""
        with self._lock:
            for path in list(self._attached):
                self._detach_locked(path)
            if self._obj is not None:
                self._obj.close()
                self._obj = None

    def __enter__(self) -> HostFlowCollector:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # cgroups -------------------------------------------------------------

    @property
    def cgroups(self) -> dict[Path, int]:
        """Attached cgroup directories → their ids."""
        return {path: att.cgroup_id for path, att in self._attached.items()}

    def attach(self, *, cgroup: Path) -> int:
        """Count the traffic of every socket under ``cgroup`` (a cgroup v2
        directory). Returns its cgroup id. Idempotent."""
        with self._lock:
            if self._obj is None:
                raise ProbeLoadError("hostNetwork probe is not loaded; call open() first")
            known = self._attached.get(cgroup)
            if known is not None:
                return known.cgroup_id
            try:
                fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as err:
                raise ProbeLoadError(f"open cgroup {cgroup}: {err.strerror}") from None
            try:
                cgroup_id = os.fstat(fd).st_ino
                # watched before the links exist, so no packet is counted as unwatched
                maps.update(
                    fd=self._watched_fd, key=_WATCHED_KEY.pack(cgroup_id), value=_WATCHED_ON
                )
                attachment = _Attachment(cgroup_id=cgroup_id, links=[])
                self._attached[cgroup] = attachment
                try:
                    for prog in (INGRESS_PROG, EGRESS_PROG):
                        attachment.links.append(self._obj.attach_cgroup(prog=prog, cgroup_fd=fd))
                except ProbeLoadError:
                    self._detach_locked(cgroup)
                    raise
            finally:
                os.close(fd)  # the links hold their own reference to the cgroup
            return cgroup_id

    def detach(self, *, cgroup: Path) -> None:
        """Stop counting under ``cgroup``. Unknown directories are ignored."""
        with self._lock:
            self._detach_locked(cgroup)

    def _detach_locked(self, cgroup: Path) -> None:
        attachment = self._attached.pop(cgroup, None)
        if attachment is None:
            return
        for link in attachment.links:
            link.destroy()
        if not any(a.cgroup_id == attachment.cgroup_id for a in self._attached.values()):
            maps.delete(fd=self._watched_fd, key=_WATCHED_KEY.pack(attachment.cgroup_id))

    # reading -------------------------------------------------------------

    def read_flows(self) -> list[Flow]:
        """Per-flow deltas since the previous call (the kernel map is drained)."""
        if self._obj is None:
            raise ProbeLoadError("hostNetwork probe is not loaded")
        keys, values, count = maps.read_batch(
            fd=self._flows_fd,
            key_size=HOST_FLOW_KEY.size,
            value_size=FLOW_VALUE.size,
            delete=True,
        )
        if count == 0:
            return []
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return _decode(keys, values)
        finally:
            if gc_was_enabled:
                gc.enable()

    def stats(self) -> HostFlowStats:
        if self._obj is None:
            raise ProbeLoadError("hostNetwork probe is not loaded")
        v = maps.sum_percpu_array(fd=self._stats_fd, slots=len(HostFlowStat))
        return HostFlowStats(
            not_ip=v[HostFlowStat.NOT_IP],
            malformed=v[HostFlowStat.MALFORMED],
            unwatched=v[HostFlowStat.UNWATCHED],
            map_full=v[HostFlowStat.MAP_FULL],
        )


def _decode(keys: bytes, values: bytes) -> list[Flow]:
    ntop = socket.inet_ntop
    out: list[Flow] = []
    for (cgroup_id, saddr, daddr, sport, dport, proto, family, direction), (
        nbytes,
        packets,
        first,
        last,
        flags,
        _last_jiffies,  # the flow probe's clock gate; this program reads the clock always
    ) in zip(HOST_FLOW_KEY.iter_unpack(keys), FLOW_VALUE.iter_unpack(values), strict=True):
        if family == 4:
            src, dst = ntop(socket.AF_INET, saddr[:4]), ntop(socket.AF_INET, daddr[:4])
        else:
            src, dst = ntop(socket.AF_INET6, saddr), ntop(socket.AF_INET6, daddr)
        out.append(
            Flow(
                src,
                dst,
                sport,
                dport,
                proto,
                "ingress" if direction == DIR_INGRESS else "egress",
                0,
                nbytes,
                packets,
                flags,
                first,
                last,
                cgroup_id,
            )
        )
    return out
