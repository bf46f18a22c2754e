"""The DNS probe: a tc classifier next to the flow probe, per-name counters in the kernel.

One program (``orb8_dns``) on both clsact hooks of each chosen interface.
It keeps one row per (interface, client, server, name, qtype, rcode) in an
LRU hash; the collector drains it with a batch lookup-and-delete, so each
read returns deltas. Queries are rows with ``rcode is None``.

With a pin directory the row map and the queries in flight are pinned like
the flow maps (``<pin dir>/<agent id>/dns_rows_v<layout>``,
``dns_inflight_v<layout>``, see pins.py): rows a killed agent had not
reported yet, and what its still-attached filters counted until the next
agent took over, are read by that next agent; an answer to a query asked
before the restart still finds it for its latency. A clean close unpins.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from orb8_common.errors import Orb8Error, ProbeLoadError

from . import libbpf, maps, pins, tc
from .dns_abi import (
    DNS_KEY,
    DNS_LAYOUT,
    DNS_VALUE,
    EXCLUSIVE_STATS,
    FLAG_NAME_TRUNCATED,
    FLAG_TCP,
    RCODE_QUERY,
    DnsConfig,
    DnsStat,
)
from .dns_names import decode_name, qtype_name, rcode_name
from .objects import object_path

LOG = logging.getLogger(__name__)
PROG = "orb8_dns"
PRIORITY_BASE = 0xB900
# map name -> the name it is pinned under (the layout version is part of it)
DNS_MAPS = {"dns_rows": f"dns_rows_v{DNS_LAYOUT}", "dns_inflight": f"dns_inflight_v{DNS_LAYOUT}"}


@dataclass(frozen=True, slots=True)
class DnsRowKey:
    ifindex: int
    client_ip: str
    server_ip: str
    name: str
    qtype: str
    rcode: str | None  # None: the row counts queries
    truncated: bool
    tcp: bool


@dataclass(slots=True)
class DnsRow:
    """Queries (``key.rcode is None``) or answers of one name, as a delta since the last read."""

    key: DnsRowKey
    count: int
    matched: int  # answers matched to their query (these have a latency)
    latency_sum_ns: int
    latency_max_ns: int


@dataclass(frozen=True, slots=True)
class DnsStats:
    """Cumulative probe counters (see enum dns_stat in bpf/orb8_dns.bpf.h)."""

    queries: int
    answers: int
    malformed: int
    qdcount: int
    not_query: int
    map_full: int
    tcp_skipped: int
    compressed: int
    name_truncated: int
    unmatched: int
    inserted: int

    @property
    def packets(self) -> int:
        """DNS-port packets seen: each lands in exactly one exclusive counter."""
        return sum(getattr(self, s.name.lower()) for s in EXCLUSIVE_STATS)


def _ip(raw: bytes, family: int) -> str:
    return (
        socket.inet_ntop(socket.AF_INET, raw[:4])
        if family == 4
        else socket.inet_ntop(socket.AF_INET6, raw)
    )


def decode_rows(*, keys: bytes, values: bytes) -> list[DnsRow]:
    out: list[DnsRow] = []
    for (client, server, ifindex, qtype, rcode, family, name_len, flags, name), (
        count,
        matched,
        lat_sum,
        lat_max,
        _last,
    ) in zip(DNS_KEY.iter_unpack(keys), DNS_VALUE.iter_unpack(values), strict=True):
        out.append(
            DnsRow(
                key=DnsRowKey(
                    ifindex=ifindex,
                    client_ip=_ip(client, family),
                    server_ip=_ip(server, family),
                    name=decode_name(wire=name[:name_len]),
                    qtype=qtype_name(qtype),
                    rcode=None if rcode == RCODE_QUERY else rcode_name(rcode),
                    truncated=bool(flags & FLAG_NAME_TRUNCATED),
                    tcp=bool(flags & FLAG_TCP),
                ),
                count=count,
                matched=matched,
                latency_sum_ns=lat_sum,
                latency_max_ns=lat_max,
            )
        )
    return out


class DnsCollector:
    """Owns one loaded dns.bpf.o and its tc filters (same lifecycle as FlowCollector).

    Its state file lives under ``<run_dir>/<agent_id>.dns/`` and its filters
    use priority ``0xB900 | crc32(agent_id) & 0xff``, so they sit next to the
    flow probe's filters of the same agent without touching them.
    """

    def __init__(
        self,
        *,
        agent_id: str = "agent",
        run_dir: Path = tc.DEFAULT_RUN_DIR,
        port: int = 53,
        tcp: bool = True,
        path: Path | None = None,
        pin_dir: Path | None = None,
    ) -> None:
        self._path = path or object_path(name="dns")
        self._pin = pin_dir / agent_id if pin_dir is not None else None
        self._config = DnsConfig(port=port, tcp=1 if tcp else 0)
        self._state = tc.TcState(
            agent_id=f"{agent_id}.dns",
            run_dir=run_dir,
            priority=tc.priority_for(agent_id=agent_id, base=PRIORITY_BASE),
        )
        self._siblings = (tc.priority_for(agent_id=agent_id),)  # the flow probe's filters
        self._obj: libbpf.BpfObject | None = None
        self._lock = threading.Lock()
        self._prog_fd = -1
        self._rows_fd = -1
        self._stats_fd = -1
        self._inflight_fd = -1

    # lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Sweep what a dead run with the same agent id left, then load the object (reusing
        the maps it pinned, where their layout is this one)."""
        for left in self._state.claim():
            tc.remove_attachment(attachment=left, priority=self._state.claimed_priority)
        self._state.attachments.clear()
        self._state.save()
        # other probes pin their maps here too (flows*, tcp_health): leave those alone
        pins.drop_foreign_layouts(directory=self._pin, prefix="dns_", keep=DNS_MAPS.values())
        try:
            self._load_pinned_or_not()
        except BaseException:
            self._state.release()  # nothing loaded: the agent id is free again
            raise

    def _load_pinned_or_not(self) -> None:
        self._pin = pins.load_reusing(
            directory=self._pin, names=DNS_MAPS.values(), load=self._load_at, what="DNS maps"
        )

    def _load_at(self, pin: Path | None) -> None:
        self._pin = pin
        self._load()

    def _load(self) -> None:
        obj = libbpf.BpfObject(path=self._path)
        try:
            obj.set_rodata(data=self._config)
            if self._pin is not None:
                self._pin.mkdir(parents=True, exist_ok=True)
                for name, pinned in DNS_MAPS.items():
                    obj.set_pin_path(map_name=name, path=self._pin / pinned)
            obj.load()
            self._prog_fd = obj.prog_fd(name=PROG)
            self._rows_fd = obj.map_fd(name="dns_rows")
            self._stats_fd = obj.map_fd(name="dns_stats")
            self._inflight_fd = obj.map_fd(name="dns_inflight")
        except BaseException:
            obj.close()
            raise
        self._obj = obj

    @property
    def pin_dir(self) -> Path | None:
        """Where the maps are pinned (None: unpinned)."""
        return self._pin

    def close(self) -> None:
        """Detach from every interface, unload, forget the state file (and the pins)."""
        with self._lock:
            errors: list[str] = []
            for name in list(self._state.attachments):
                try:
                    self._detach_locked(name)
                except ProbeLoadError as err:
                    errors.append(str(err))
            if self._obj is not None:
                self._obj.close()
                self._obj = None
            # a clean stop drained and reported everything
            pins.unpin(directory=self._pin, names=DNS_MAPS.values())
            if not errors:
                self._state.release()
        if errors:
            raise ProbeLoadError("; ".join(errors))

    def __enter__(self) -> DnsCollector:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # interfaces ----------------------------------------------------------

    @property
    def interfaces(self) -> list[str]:
        return sorted(self._state.attachments)

    @property
    def tc_priority(self) -> int:
        return self._state.priority

    def attach(self, *, interface: str) -> None:
        """Start parsing DNS on ``interface`` (both hooks). Idempotent."""
        with self._lock:
            if self._obj is None:
                raise ProbeLoadError("DNS probe is not loaded; call open() first")
            if interface in self._state.attachments:
                return
            ifindex = tc.ifindex_of(interface=interface)
            created = tc.create_clsact(ifindex=ifindex)
            self._state.attachments[interface] = tc.Attachment(interface, ifindex, created)
            self._state.save()  # before attaching, so a crash in between is still swept
            try:
                for point in (libbpf.BPF_TC_INGRESS, libbpf.BPF_TC_EGRESS):
                    tc.attach_filter(
                        ifindex=ifindex,
                        point=point,
                        prog_fd=self._prog_fd,
                        priority=self._state.priority,
                    )
            except ProbeLoadError:
                self._detach_locked(interface)
                raise

    def repair(self) -> list[str]:
        """Re-attach where our filters vanished (the flow probe removed a clsact
        it had created while we still used it); returns those interfaces."""
        with self._lock:
            gone = [
                att
                for att in self._state.attachments.values()
                if tc.query_filter(
                    ifindex=att.ifindex, point=libbpf.BPF_TC_INGRESS, priority=self._state.priority
                )
                is None
            ]
        repaired: list[str] = []
        for att in gone:
            with self._lock:
                self._state.attachments.pop(att.interface, None)
            try:
                self.attach(interface=att.interface)
            except Orb8Error:
                continue  # the interface itself is gone; the agent detaches it
            repaired.append(att.interface)
        return repaired

    def detach(self, *, interface: str) -> None:
        with self._lock:
            self._detach_locked(interface)

    def _detach_locked(self, interface: str) -> None:
        att = self._state.attachments.get(interface)
        if att is None:
            return
        # clsact is shared with the flow probe of the same agent: only remove it
        # if this probe created it and the flow probe's filter is not on it
        keep_qdisc = att.created_qdisc and _other_filters(att.ifindex, self._siblings)
        tc.remove_attachment(
            attachment=tc.Attachment(
                att.interface, att.ifindex, att.created_qdisc and not keep_qdisc
            ),
            priority=self._state.priority,
        )
        del self._state.attachments[interface]
        self._state.save()

    # reading -------------------------------------------------------------

    def read_rows(self) -> list[DnsRow]:
        """Per-row deltas since the previous call (the kernel map is drained)."""
        if self._obj is None:
            raise ProbeLoadError("DNS probe is not loaded")
        keys, values, count = maps.read_batch(
            fd=self._rows_fd, key_size=DNS_KEY.size, value_size=DNS_VALUE.size, delete=True
        )
        return decode_rows(keys=keys, values=values) if count else []

    def stats(self) -> DnsStats:
        if self._obj is None:
            raise ProbeLoadError("DNS probe is not loaded")
        v = maps.sum_percpu_array(fd=self._stats_fd, slots=len(DnsStat))
        return DnsStats(**{s.name.lower(): v[s] for s in DnsStat})

    @property
    def prog_fd(self) -> int:
        """The classifier's fd (tests and the bench test-run it)."""
        if self._obj is None:
            raise ProbeLoadError("DNS probe is not loaded")
        return self._prog_fd

    @property
    def inflight_map_fd(self) -> int:
        return self._inflight_fd


def _other_filters(ifindex: int, priorities: tuple[int, ...]) -> bool:
    """Whether a filter at one of ``priorities`` (a sibling probe's) is on this interface."""
    return any(
        tc.query_filter(ifindex=ifindex, point=point, priority=prio) is not None
        for point in (libbpf.BPF_TC_INGRESS, libbpf.BPF_TC_EGRESS)
        for prio in priorities
    )
