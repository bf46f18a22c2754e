"""The flow probe: tc classifiers on chosen interfaces, per-flow counters in the kernel."""

from __future__ import annotations

import errno
import gc
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from orb8_common.errors import ProbeLoadError, UsageError

from . import libbpf, maps, pins, tc
from .abi import (
    FILTER_BITMAP_IFS,
    FLOW4_KEY,
    FLOW6_KEY,
    FLOW_LAYOUT,
    FLOW_VALUE,
    FlowsConfig,
    FlowStat,
)
from .flowcodec import AddressNames, FlowColumns, decode4, decode6
from .flowfilter import FilterEntries, InterfaceFilter, entries
from .libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS
from .models import Flow, FlowStats
from .objects import object_path

LOG = logging.getLogger(__name__)
INGRESS_PROG = "orb8_flows_ingress"
EGRESS_PROG = "orb8_flows_egress"
# map name -> the name it is pinned under; the layout version is part of it, so
# a map pinned by an agent of another layout is never reused (and so misread)
# (bpffs refuses dots in names)
FLOW_MAPS = {"flows4": f"flows4_v{FLOW_LAYOUT}", "flows6": f"flows6_v{FLOW_LAYOUT}"}
# flow filter maps (never pinned: the agent writes them again from its config)
FILTER_MAPS = (
    "flow_filter_bits", "flow_filter_gate", "flow_filter_ifs", "flow_filter_ports",
    "flow_filter_cidr4", "flow_filter_cidr6",
)  # fmt: skip

# a map that refuses a new key because it holds max_entries already: E2BIG from a hash,
# ENOSPC from an LPM trie
_FULL = frozenset({errno.E2BIG, errno.ENOSPC})


class _FilterWriteError(ProbeLoadError):
    """A filter map refused an entry; the message is the short reason status shows."""


def _write(*, name: str, fd: int, key: bytes, value: bytes) -> None:
    try:
        maps.update(fd=fd, key=key, value=value)
    except ProbeLoadError as err:
        code = getattr(err, "errno", None)
        if code in _FULL:
            raise _FilterWriteError(f"BPF map {name} is full") from err
        short = str(err).split(" | ")[0]  # libbpf's log stays in the agent's log
        raise _FilterWriteError(f"writing BPF map {name} failed: {short}") from err


class FlowCollector:
    """Owns one loaded flows.bpf.o and its tc filters.

    Call :meth:`open` first (it also removes what a killed run with the same
    ``agent_id`` left behind), then :meth:`attach` per interface. All methods
    are blocking but short; from asyncio, call them through
    ``asyncio.to_thread`` or directly (each is a few syscalls).
    """

    def __init__(
        self,
        *,
        agent_id: str = "agent",
        sample_rate: int = 1,
        max_flows: int | None = None,
        run_dir: Path = tc.DEFAULT_RUN_DIR,
        path: Path | None = None,
        pin_dir: Path | None = None,
    ) -> None:
        if sample_rate < 1:
            raise UsageError("sample rate must be at least 1")
        self._path = path or object_path(name="flows")
        self._config = FlowsConfig(sample_rate=sample_rate, track_ingress=1, track_egress=1)
        self._max_flows = max_flows
        # With a pin directory the flow maps outlive the process: what a killed
        # agent had not drained yet is still there for the next one.
        self._pin = pin_dir / agent_id if pin_dir is not None else None
        self._state = tc.TcState(agent_id=agent_id, run_dir=run_dir)
        self._obj: libbpf.BpfObject | None = None
        self._lock = threading.Lock()
        self._names = AddressNames()
        self._inserted_seen = 0
        self._evicted = 0
        self._ingress_fd = -1
        self._egress_fd = -1
        self._flows4_fd = -1
        self._flows6_fd = -1
        self._stats_fd = -1
        # flow filters: map name → fd, and what each filtered ifindex holds now
        self._filter_fds: dict[str, int] = {}
        self._filters: dict[int, tuple[InterfaceFilter, FilterEntries]] = {}
        self._filter_bits: dict[int, int] = {}  # flow_filter_bits words that are not 0

    # lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Sweep leftovers of a dead run, then load the object."""
        for left in self._state.claim():
            tc.remove_attachment(attachment=left, priority=self._state.priority)
        self._state.attachments.clear()
        self._state.save()
        # other probes pin their maps here too (tcp_health, dns_*): leave those alone
        pins.drop_foreign_layouts(directory=self._pin, prefix="flows", keep=FLOW_MAPS.values())
        try:
            self._load_pinned_or_not()
        except BaseException:
            self._state.release()  # nothing loaded: the agent id is free again
            raise

    def _load_pinned_or_not(self) -> None:
        self._pin = pins.load_reusing(
            directory=self._pin, names=FLOW_MAPS.values(), load=self._load_at, what="flow maps"
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
                for name, pinned in FLOW_MAPS.items():
                    obj.set_pin_path(map_name=name, path=self._pin / pinned)
            if self._max_flows:
                for name in FLOW_MAPS:
                    libbpf.check(
                        rc=libbpf.lib().bpf_map__set_max_entries(
                            obj.map_ptr(name=name), self._max_flows
                        ),
                        what=f"size the {name} map",
                    )
            obj.load()
            self._ingress_fd = obj.prog_fd(name=INGRESS_PROG)
            self._egress_fd = obj.prog_fd(name=EGRESS_PROG)
            self._flows4_fd = obj.map_fd(name="flows4")
            self._flows6_fd = obj.map_fd(name="flows6")
            self._stats_fd = obj.map_fd(name="flow_stats")
            self._filter_fds = {name: obj.map_fd(name=name) for name in FILTER_MAPS}
        except BaseException:
            obj.close()
            raise
        self._obj = obj

    def close(self) -> None:
        """Detach from every interface, unload, forget the state file (and the pinned map)."""
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
                self._filters.clear()
                self._filter_bits.clear()
            # a clean stop drained and reported everything
            pins.unpin(directory=self._pin, names=FLOW_MAPS.values())
            if not errors:
                self._state.release()
        if errors:
            raise ProbeLoadError("; ".join(errors))

    def __enter__(self) -> FlowCollector:
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
        """Start counting on ``interface`` (both directions). Idempotent."""
        with self._lock:
            if self._obj is None:
                raise ProbeLoadError("flow probe is not loaded; call open() first")
            if interface in self._state.attachments:
                return
            ifindex = tc.ifindex_of(interface=interface)
            created = tc.create_clsact(ifindex=ifindex)
            # record before attaching so a crash in between is still swept
            self._state.attachments[interface] = tc.Attachment(interface, ifindex, created)
            self._state.save()
            try:
                for point, fd in (
                    (BPF_TC_INGRESS, self._ingress_fd),
                    (BPF_TC_EGRESS, self._egress_fd),
                ):
                    tc.attach_filter(
                        ifindex=ifindex, point=point, prog_fd=fd, priority=self._state.priority
                    )
            except ProbeLoadError:
                self._detach_locked(interface)
                raise

    def detach(self, *, interface: str) -> None:
        """Stop counting on ``interface``; removes clsact only if we created it."""
        with self._lock:
            self._detach_locked(interface)

    def _detach_locked(self, interface: str) -> None:
        att = self._state.attachments.get(interface)
        if att is None:
            return
        tc.remove_attachment(attachment=att, priority=self._state.priority)
        del self._state.attachments[interface]
        self._state.save()

    # filters -------------------------------------------------------------

    @property
    def filters(self) -> dict[int, InterfaceFilter]:
        """The filter each filtered ifindex has in the kernel now."""
        return {ifindex: applied[0] for ifindex, applied in self._filters.items()}

    def set_filters(self, *, filters: Mapping[int, InterfaceFilter]) -> dict[int, str]:
        """Make the kernel filter exactly ``filters`` (ifindex → filter); others count all.

        An interface whose filter changes counts everything while its entries
        are rewritten (never less than any session asked for). One that cannot
        be written (a map full) stays unfiltered: it is returned, ifindex → why,
        and written again at the next call that asks for it.
        """
        problems: dict[int, str] = {}
        with self._lock:
            if self._obj is None:
                raise ProbeLoadError("flow probe is not loaded; call open() first")
            for ifindex in sorted(set(self._filters) - set(filters)):
                self._unfilter_locked(ifindex)
            for ifindex, compiled in sorted(filters.items()):
                applied = self._filters.get(ifindex)
                if applied is not None and applied[0] == compiled:
                    continue
                self._unfilter_locked(ifindex)
                wanted = entries(ifindex=ifindex, compiled=compiled)
                try:
                    self._write_locked(ifindex, wanted)
                except _FilterWriteError as err:
                    self._remove_entries_locked(wanted)
                    problems[ifindex] = str(err)
                    continue
                self._filters[ifindex] = (compiled, wanted)
            # the gate (ifindexes past the bitmap): while 0 they never look a filter up
            maps.update(
                fd=self._filter_fds["flow_filter_gate"],
                key=bytes(4),
                value=len(self._filters).to_bytes(4, sys.byteorder),
            )
        return problems

    def _write_locked(self, ifindex: int, wanted: FilterEntries) -> None:
        for name, table in (
            ("flow_filter_ports", wanted.ports),
            ("flow_filter_cidr4", wanted.cidrs4),
            ("flow_filter_cidr6", wanted.cidrs6),
        ):
            for key, value in table.items():
                _write(name=name, fd=self._filter_fds[name], key=key, value=value)
        # last: the interface is filtered only once its clauses are all there
        _write(
            name="flow_filter_ifs",
            fd=self._filter_fds["flow_filter_ifs"],
            key=ifindex.to_bytes(4, sys.byteorder),
            value=wanted.interface,
        )
        self._set_bit_locked(ifindex, on=True)

    def _set_bit_locked(self, ifindex: int, *, on: bool) -> None:
        """Flip the interface's "filtered?" bit (ifindexes below FILTER_BITMAP_IFS)."""
        if ifindex >= FILTER_BITMAP_IFS:
            return
        word = ifindex // 64
        value = self._filter_bits.get(word, 0)
        value = value | (1 << ifindex % 64) if on else value & ~(1 << ifindex % 64)
        maps.update(
            fd=self._filter_fds["flow_filter_bits"],
            key=word.to_bytes(4, sys.byteorder),
            value=value.to_bytes(8, sys.byteorder),
        )
        if value:
            self._filter_bits[word] = value
        else:
            self._filter_bits.pop(word, None)

    def _unfilter_locked(self, ifindex: int) -> None:
        applied = self._filters.pop(ifindex, None)
        if applied is None:
            return
        # first: from here on the interface counts everything
        self._set_bit_locked(ifindex, on=False)
        maps.delete(fd=self._filter_fds["flow_filter_ifs"], key=ifindex.to_bytes(4, sys.byteorder))
        self._remove_entries_locked(applied[1])

    def _remove_entries_locked(self, held: FilterEntries) -> None:
        for name, table in (
            ("flow_filter_ports", held.ports),
            ("flow_filter_cidr4", held.cidrs4),
            ("flow_filter_cidr6", held.cidrs6),
        ):
            for key in table:
                maps.delete(fd=self._filter_fds[name], key=key)

    # reading -------------------------------------------------------------

    def read_flows(self) -> list[Flow]:
        """Per-flow deltas since the previous call (the kernel maps are drained)."""
        return self.read_columns().rows()

    def read_columns(self) -> FlowColumns:
        """The same deltas as :meth:`read_flows`, as columns: no object per flow."""
        if self._obj is None:
            raise ProbeLoadError("flow probe is not loaded")
        # inserted before the drain starts and not returned by it = evicted
        inserted = maps.sum_percpu_array(fd=self._stats_fd, slots=len(FlowStat))[FlowStat.INSERTED]
        keys4, values4, count4 = maps.read_batch(
            fd=self._flows4_fd, key_size=FLOW4_KEY.size, value_size=FLOW_VALUE.size, delete=True
        )
        keys6, values6, count6 = maps.read_batch(
            fd=self._flows6_fd, key_size=FLOW6_KEY.size, value_size=FLOW_VALUE.size, delete=True
        )
        self._evicted += max(0, inserted - self._inserted_seen - count4 - count6)
        self._inserted_seen = inserted
        self._names.trim()
        # the IPv6 decode makes tuples per flow; a GC pass in the middle would
        # walk all of them for nothing
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            cols = decode4(keys=keys4, values=values4, names=self._names)
            if count6:
                cols = cols.extend(decode6(keys=keys6, values=values6, names=self._names))
            return cols
        finally:
            if gc_was_enabled:
                gc.enable()

    def stats(self) -> FlowStats:
        """Cumulative probe counters (map-full approximates LRU pressure)."""
        if self._obj is None:
            raise ProbeLoadError("flow probe is not loaded")
        v = maps.sum_percpu_array(fd=self._stats_fd, slots=len(FlowStat))
        return FlowStats(
            not_ip=v[FlowStat.NOT_IP],
            malformed=v[FlowStat.MALFORMED],
            sampled_out=v[FlowStat.SAMPLED_OUT],
            map_full=v[FlowStat.MAP_FULL],
            inserted=v[FlowStat.INSERTED],
            evicted_estimate=self._evicted,
            filtered=v[FlowStat.FILTERED],
        )

    def prog_fd(self, *, direction: str) -> int:
        """The classifier's fd for ``ingress`` or ``egress`` (tests and bench test-run it)."""
        if self._obj is None:
            raise ProbeLoadError("flow probe is not loaded")
        return self._ingress_fd if direction == "ingress" else self._egress_fd

    def flow_map_fd(self, *, family: int) -> int:
        """The flows4 (``family`` 4) or flows6 map fd (the bench and tests fill them)."""
        return self._flows4_fd if family == 4 else self._flows6_fd
