"""The flow probe: tc classifiers on chosen interfaces, per-flow counters in the kernel."""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import threading
from pathlib import Path
from types import TracebackType

from orb8_common.errors import ProbeLoadError, UsageError

from . import libbpf, maps, tc
from .abi import DIR_INGRESS, FLOW_KEY, FLOW_VALUE, FlowsConfig, FlowStat
from .libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS
from .models import Flow, FlowStats
from .objects import object_path

LOG = logging.getLogger(__name__)
INGRESS_PROG = "orb8_flows_ingress"
EGRESS_PROG = "orb8_flows_egress"


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
        # With a pin directory the flow map outlives the process: what a killed
        # agent had not drained yet is still there for the next one.
        self._pin = pin_dir / agent_id / "flows" if pin_dir is not None else None
        self._state = tc.TcState(agent_id=agent_id, run_dir=run_dir)
        self._obj: libbpf.BpfObject | None = None
        self._lock = threading.Lock()
        self._ip_cache: dict[bytes, str] = {}
        self._inserted_seen = 0
        self._evicted = 0
        self._ingress_fd = -1
        self._egress_fd = -1
        self._flows_fd = -1
        self._stats_fd = -1

    # lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Sweep leftovers of a dead run, then load the object."""
        for left in self._state.claim():
            tc.remove_attachment(attachment=left, priority=self._state.priority)
        self._state.attachments.clear()
        self._state.save()
        try:
            self._load()
        except (ProbeLoadError, OSError) as err:
            if self._pin is None:
                raise
            if self._pin.exists():
                # A pinned map of another shape (an older version): start afresh.
                self._pin.unlink()
                with contextlib.suppress(ProbeLoadError, OSError):
                    self._load()
                    return
            # No usable bpffs there (e.g. /sys/fs/bpf not mounted into the container):
            # run unpinned; what is not reported yet then dies with the process.
            LOG.warning("flow map not pinned at %s (%s); running without", self._pin, err)
            self._pin = None
            self._load()

    def _load(self) -> None:
        obj = libbpf.BpfObject(path=self._path)
        try:
            obj.set_rodata(data=self._config)
            if self._pin is not None:
                self._pin.parent.mkdir(parents=True, exist_ok=True)
                obj.set_pin_path(map_name="flows", path=self._pin)
            if self._max_flows:
                libbpf.check(
                    rc=libbpf.lib().bpf_map__set_max_entries(
                        obj.map_ptr(name="flows"), self._max_flows
                    ),
                    what="size the flows map",
                )
            obj.load()
            self._ingress_fd = obj.prog_fd(name=INGRESS_PROG)
            self._egress_fd = obj.prog_fd(name=EGRESS_PROG)
            self._flows_fd = obj.map_fd(name="flows")
            self._stats_fd = obj.map_fd(name="flow_stats")
        except BaseException:
            obj.close()
            self._state.release()
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
            if self._pin is not None:
                self._pin.unlink(missing_ok=True)  # a clean stop drained and reported everything
                with contextlib.suppress(OSError):
                    self._pin.parent.rmdir()
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

    # reading -------------------------------------------------------------

    def read_flows(self) -> list[Flow]:
        """Per-flow deltas since the previous call (the kernel map is drained)."""
        if self._obj is None:
            raise ProbeLoadError("flow probe is not loaded")
        # inserted before the drain starts and not returned by it = evicted
        inserted = maps.sum_percpu_array(fd=self._stats_fd, slots=len(FlowStat))[FlowStat.INSERTED]
        keys, values, count = maps.read_batch(
            fd=self._flows_fd, key_size=FLOW_KEY.size, value_size=FLOW_VALUE.size, delete=True
        )
        self._evicted += max(0, inserted - self._inserted_seen - count)
        self._inserted_seen = inserted
        if count == 0:
            return []
        # decoding allocates two objects per flow; a GC pass in the middle of
        # 100k allocations would cost more than the whole decode
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._decode(keys, values)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _decode(self, keys: bytes, values: bytes) -> list[Flow]:
        cache = self._ip_cache
        if len(cache) > 65536:
            cache.clear()
        ntop = socket.inet_ntop
        af4, af6 = socket.AF_INET, socket.AF_INET6
        out: list[Flow] = []
        append = out.append
        for (saddr, daddr, sport, dport, ifindex, proto, family, direction), (
            nbytes,
            packets,
            first,
            last,
            flags,
        ) in zip(FLOW_KEY.iter_unpack(keys), FLOW_VALUE.iter_unpack(values), strict=True):
            src = cache.get(saddr)
            if src is None:
                src = cache[saddr] = ntop(af4, saddr[:4]) if family == 4 else ntop(af6, saddr)
            dst = cache.get(daddr)
            if dst is None:
                dst = cache[daddr] = ntop(af4, daddr[:4]) if family == 4 else ntop(af6, daddr)
            append(
                Flow(
                    src,
                    dst,
                    sport,
                    dport,
                    proto,
                    "ingress" if direction == DIR_INGRESS else "egress",
                    ifindex,
                    nbytes,
                    packets,
                    flags,
                    first,
                    last,
                )
            )
        return out

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
        )

    def prog_fd(self, *, direction: str) -> int:
        """The classifier's fd for ``ingress`` or ``egress`` (tests and bench test-run it)."""
        if self._obj is None:
            raise ProbeLoadError("flow probe is not loaded")
        return self._ingress_fd if direction == "ingress" else self._egress_fd

    @property
    def flows_map_fd(self) -> int:
        """The flows map fd (the bench fills it from user space)."""
        return self._flows_fd
