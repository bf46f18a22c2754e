"""The reconciler's view of the loaded BPF probes (a ``ProbeSet``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from orb8_agent.dataplane.dns import DnsCollector, DnsRow
from orb8_agent.dataplane.flowfilter import InterfaceFilter
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Alert, Flow, SyscallCount, TcpHealth
from orb8_agent.dataplane.probes import ProbeSet
from orb8_agent.dataplane.syscalls import SyscallCollector
from orb8_agent.dataplane.tcphealth import TcpHealthCollector
from orb8_common.errors import ProbeLoadError

FLOWS, SYSCALLS, TCP, DNS, HOSTFLOWS = "flows", "syscalls", "tcp", "dns", "hostflows"


class KernelDataPlane:
    """Adapts a ProbeSet to the calls the node reconciler makes."""

    def __init__(self, *, probes: ProbeSet) -> None:
        self._probes = probes

    def loaded_probes(self) -> frozenset[str]:
        probes = self._probes
        pairs = (
            (FLOWS, probes.flows), (SYSCALLS, probes.syscalls), (TCP, probes.tcp),
            (DNS, probes.dns), (HOSTFLOWS, probes.hostflows),
        )  # fmt: skip
        return frozenset(name for name, loaded in pairs if loaded is not None)

    def probe_errors(self) -> Mapping[str, str]:
        return dict(self._probes.failures)

    def attach_interface(self, *, ifname: str) -> None:
        self._flows().attach(interface=ifname)

    def detach_interface(self, *, ifname: str) -> None:
        self._flows().detach(interface=ifname)

    def set_flow_filters(self, *, filters: Mapping[int, InterfaceFilter]) -> dict[int, str]:
        return self._flows().set_filters(filters=filters)

    def attach_dns_interface(self, *, ifname: str) -> None:
        self._dns().attach(interface=ifname)

    def detach_dns_interface(self, *, ifname: str) -> None:
        self._dns().detach(interface=ifname)

    def repair_dns(self) -> list[str]:
        return self._dns().repair()

    def read_dns(self) -> list[DnsRow]:
        return self._dns().read_rows()

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

    def read_counts(self) -> list[SyscallCount]:
        return self._syscalls().read_counts()

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

    def set_watched_netns(self, *, inodes: Collection[int]) -> None:
        self._tcp().set_watched_netns(inodes=frozenset(inodes))

    def read_tcp_health(self) -> list[TcpHealth]:
        return self._tcp().read()

    def close(self) -> None:
        self._probes.close()

    def _flows(self) -> FlowCollector:
        if self._probes.flows is None:
            raise ProbeLoadError(f"flow probe is not loaded: {self._probes.failures.get(FLOWS)}")
        return self._probes.flows

    def _tcp(self) -> TcpHealthCollector:
        if self._probes.tcp is None:
            raise ProbeLoadError(
                f"TCP health probe is not loaded: {self._probes.failures.get(TCP)}"
            )
        return self._probes.tcp

    def _dns(self) -> DnsCollector:
        if self._probes.dns is None:
            raise ProbeLoadError(f"DNS probe is not loaded: {self._probes.failures.get(DNS)}")
        return self._probes.dns

    def _syscalls(self) -> SyscallCollector:
        if self._probes.syscalls is None:
            reason = self._probes.failures.get(SYSCALLS)
            raise ProbeLoadError(f"syscall probe is not loaded: {reason}")
        return self._probes.syscalls
