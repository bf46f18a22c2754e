"""The reconciler's view of the loaded BPF probes (a ``ProbeSet``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Alert, Flow
from orb8_agent.dataplane.probes import ProbeSet
from orb8_agent.dataplane.syscalls import SyscallCollector
from orb8_common.errors import ProbeLoadError

FLOWS, SYSCALLS, HOSTFLOWS = "flows", "syscalls", "hostflows"


class KernelDataPlane:
    """Adapts a ProbeSet to the calls the node reconciler makes."""

    def __init__(self, *, probes: ProbeSet) -> None:
        self._probes = probes

    def loaded_probes(self) -> frozenset[str]:
        loaded = {FLOWS} if self._probes.flows is not None else set()
        loaded |= {HOSTFLOWS} if self._probes.hostflows is not None else set()
        return frozenset(loaded | ({SYSCALLS} if self._probes.syscalls is not None else set()))

    def probe_errors(self) -> Mapping[str, str]:
        return dict(self._probes.failures)

    def attach_interface(self, *, ifname: str) -> None:
        self._flows().attach(interface=ifname)

    def detach_interface(self, *, ifname: str) -> None:
        self._flows().detach(interface=ifname)

    def attach_cgroup(self, *, path: Path) -> int:
        if self._probes.hostflows is None:
            reason = self._probes.failures.get(HOSTFLOWS)
            raise ProbeLoadError(f"hostNetwork probe is not loaded: {reason}")
        return self._probes.hostflows.attach(cgroup=path)

    def detach_cgroup(self, *, path: Path) -> None:
        if self._probes.hostflows is not None:
            self._probes.hostflows.detach(cgroup=path)

    def set_watched_cgroups(self, *, cgroup_ids: Collection[int]) -> None:
        syscalls = self._syscalls()
        wanted = set(cgroup_ids)
        current = syscalls.watched_cgroups
        for cgroup_id in current - wanted:
            syscalls.unwatch_cgroup(cgroup_id=cgroup_id)
        for cgroup_id in wanted - current:
            syscalls.watch_cgroup(cgroup_id=cgroup_id)

    def set_alert_syscalls(self, *, names: Collection[str]) -> None:
        self._syscalls().set_alert_syscalls(syscalls=names)

    def read_flows(self) -> list[Flow]:
        """Both flow probes' deltas: veth flows (ifindex) and hostNetwork flows (cgroup_id)."""
        flows = self._probes.flows.read_flows() if self._probes.flows is not None else []
        if self._probes.hostflows is not None:
            flows += self._probes.hostflows.read_flows()
        return flows

    def poll_alerts(self) -> list[Alert]:
        return self._syscalls().poll_alerts(timeout_ms=0)

    def dropped_events(self) -> int:
        if self._probes.syscalls is None:
            return 0
        stats = self._probes.syscalls.stats()
        return stats.rate_limited + stats.ringbuf_full + stats.lost_in_user_space

    def close(self) -> None:
        self._probes.close()

    def _flows(self) -> FlowCollector:
        if self._probes.flows is None:
            raise ProbeLoadError(f"flow probe is not loaded: {self._probes.failures.get(FLOWS)}")
        return self._probes.flows

    def _syscalls(self) -> SyscallCollector:
        if self._probes.syscalls is None:
            reason = self._probes.failures.get(SYSCALLS)
            raise ProbeLoadError(f"syscall probe is not loaded: {reason}")
        return self._probes.syscalls
