"""The node agent's reconciler: desired targets → attached probes → per-session reports.

It is synchronous and single-threaded by design: the async runner calls it
from one worker thread, so the data plane never sees concurrent calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

from orb8_agent.control import baseline_store
from orb8_agent.control.alerts import ContainerRef, SessionAlerts
from orb8_agent.control.baseline import Baselines, ContainerKey, SpikeRule
from orb8_agent.control.conntrack import ConntrackReader
from orb8_agent.control.containers import ContainerCgroup, find_container_cgroups, pids_in
from orb8_agent.control.dns import DnsPodCounts, SessionDns, dns_share
from orb8_agent.control.flowfilters import kernel_filters, unapplied_problem
from orb8_agent.control.flows import FlowRouter, SessionFlows, TcpTotals
from orb8_agent.control.report import PodName, trace_node_entry
from orb8_agent.control.served import TRACE_SESSION, Served, all_pods, container_ids
from orb8_agent.control.services import Conntrack, ServiceAttributor, ServiceIndex
from orb8_agent.control.tcphealth import TcpHealthRouter, wants_tcp_health
from orb8_agent.control.veth import HostVeth, VethNotFoundError, host_veth_of
from orb8_agent.dataplane import syscall_names
from orb8_agent.dataplane.dns import DnsRow
from orb8_agent.dataplane.flowfilter import InterfaceFilter
from orb8_agent.dataplane.models import Alert, Flow, SyscallCount, TcpHealth
from orb8_agent.dataplane.tcphealth import netns_of_pid
from orb8_agent.podmetrics import PodMetrics
from orb8_common.errors import Orb8Error
from orb8_common.models import AgentPod, NodeEntry, NodeState, SessionReport

log = logging.getLogger(__name__)

FLOWS, SYSCALLS, TCP, DNS, HOSTFLOWS = "flows", "syscalls", "tcp", "dns", "hostflows"


class DataPlane(Protocol):
    """What the reconciler needs from the loaded BPF probes."""

    def loaded_probes(self) -> frozenset[str]: ...
    def probe_errors(self) -> Mapping[str, str]: ...
    def attach_interface(self, *, ifname: str) -> None: ...
    def detach_interface(self, *, ifname: str) -> None: ...
    def set_flow_filters(self, *, filters: Mapping[int, InterfaceFilter]) -> Mapping[int, str]: ...
    def attach_cgroup(self, *, path: Path) -> int: ...
    def detach_cgroup(self, *, path: Path) -> None: ...
    def set_watched_cgroups(self, *, cgroup_ids: Collection[int]) -> None: ...
    def set_alert_syscalls(self, *, names: Collection[str]) -> None: ...
    def read_flows(self) -> Sequence[Flow]: ...
    def poll_alerts(self) -> Sequence[Alert]: ...
    def read_counts(self) -> Sequence[SyscallCount]: ...
    def dropped_events(self) -> int: ...
    def set_watched_netns(self, *, inodes: Collection[int]) -> None: ...
    def read_tcp_health(self) -> Sequence[TcpHealth]: ...


class DnsDataPlane(Protocol):
    """What the reconciler needs from the DNS probe (asked only when ``dns`` is loaded)."""

    def attach_dns_interface(self, *, ifname: str) -> None: ...
    def detach_dns_interface(self, *, ifname: str) -> None: ...
    def repair_dns(self) -> list[str]: ...
    def read_dns(self) -> Sequence[DnsRow]: ...


VethResolver = Callable[[int], HostVeth]
NetnsResolver = Callable[[int], int]  # pid → network namespace inode


@dataclass
class SessionState:
    target: Served
    flows: SessionFlows | None
    alerts: SessionAlerts | None
    stopped: bool = False
    dns: SessionDns | None = None


@dataclass
class _Resolved:
    cgroups: dict[str, ContainerCgroup] = field(default_factory=dict)  # by container id
    veths: dict[str, HostVeth] = field(default_factory=dict)  # by pod uid
    netns: dict[str, int] = field(default_factory=dict)  # pod uid → network namespace inode
    problems: dict[str, str] = field(default_factory=dict)  # pod uid → why unresolved
    node_problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # what → (probe, why)


class NodeAgent:
    """Keeps the data plane in step with NodeAgentConfig/<node> and accounts per session."""

    def __init__(
        self, *, node: str, dataplane: DataPlane, cgroup_root: Path,
        clock: Callable[[], float] = time.time, veth_resolver: VethResolver | None = None,
        pod_metrics: PodMetrics | None = None, netns_resolver: NetnsResolver | None = None,
        baseline_path: Path | None = None, conntrack: Conntrack | None = None,
    ) -> None:  # fmt: skip
        self.node = node
        self._dataplane = dataplane
        self._cgroup_root = cgroup_root
        self._clock = clock
        self._veth_of: VethResolver = veth_resolver or (lambda pid: host_veth_of(pid=pid))
        self._netns_of: NetnsResolver = netns_resolver or (lambda pid: netns_of_pid(pid=pid))
        self._tcp_router = TcpHealthRouter(sessions=(), pod_by_netns={})
        self._sessions: dict[str, SessionState] = {}
        self._resolved = _Resolved()
        self._attached: dict[str, int] = {}  # host veth name → ifindex
        # hostNetwork pods: pod cgroup directory → (pod uid, cgroup id)
        self._host_cgroups: dict[Path, tuple[str, int]] = {}
        self._router = FlowRouter(sessions=(), pod_by_ifindex={})
        self._container_refs: dict[int, ContainerRef] = {}  # cgroup id → container
        self._pods_by_ip: dict[str, PodName] = {}
        self._targets: tuple[Served, ...] = ()
        self._restored: dict[str, NodeEntry] = {}  # uid → this node's last report before a restart
        self.pod_metrics = pod_metrics or PodMetrics(clock=clock)
        self._pod_key_by_ifindex: dict[int, tuple[str, str]] = {}
        self._pod_key_by_netns: dict[int, tuple[str, str]] = {}
        # Learned baselines survive agent restarts in this file (None: relearn after one).
        self._baseline_path = baseline_path
        self._saved_baselines: dict[str, dict[str, Any]] = (
            baseline_store.load(path=baseline_path) if baseline_path is not None else {}
        )
        self._saved_uids: set[str] = set(self._saved_baselines)
        self._dns_attached: dict[str, int] = {}  # host veth name → ifindex (DNS probe)
        # pods whose veth's kernel flow filter could not be written (they count everything):
        # pod uid → why; and how many such writes failed since start (a metric)
        self._filter_unapplied: dict[str, str] = {}
        self.filter_write_failures = 0
        self._dns_pod_by_ifindex: dict[int, AgentPod] = {}
        self.dns_counts = DnsPodCounts()
        self._pod_key_by_cgroup: dict[int, tuple[str, str]] = {}
        # ClusterIP Services: the runner refreshes the index; conntrack names backends
        self.services = ServiceAttributor(conntrack=conntrack or ConntrackReader())

    # -- configuration -------------------------------------------------------------------------

    def restore(self, *, reports: Sequence[SessionReport]) -> None:
        """Remember this node's last reports (read back after a restart) to continue from."""
        self._restored = {r.uid: r.trace for r in reports if r.trace is not None}

    def configure(self, *, sessions: Sequence[Served]) -> None:
        """Adopt the sessions of a new NodeAgentConfig spec (none when there is none)."""
        if self._targets:
            self.collect()  # route what the kernel holds while the old routes still apply
        self._targets = tuple(t for t in sessions if t.kind == TRACE_SESSION)
        now = self._clock()
        wanted = {target.uid for target in self._targets}
        for uid, state in self._sessions.items():
            if uid not in wanted:
                state.stopped = True  # one last report, then forgotten
        for target in self._targets:
            current = self._sessions.get(target.uid)
            if current is None or current.target.generation != target.generation:
                self._sessions[target.uid] = self._new_state(target=target, now=now, old=current)
            else:
                current.target = target
        self.resync()

    def _new_state(self, *, target: Served, now: float, old: SessionState | None) -> SessionState:
        network, syscalls = target.network, target.syscalls
        flows = (old.flows if old and old.flows else SessionFlows()) if network else None
        alerts = None
        if syscalls is not None:
            baselines = None
            if syscalls.learning_period_seconds > 0:
                baselines = Baselines(
                    learning_period=syscalls.learning_period_seconds,
                    window=target.report_interval_s,
                    rule=SpikeRule(
                        factor=syscalls.baseline.spike_factor,
                        min_count=syscalls.baseline.spike_min_count,
                    ),
                    now=now,
                )
                saved = self._saved_baselines.pop(target.uid, None)
                if saved is not None and old is None:
                    baselines.restore(snapshot=saved)
            alerts = SessionAlerts(
                alert_on=syscalls.alert_on,
                learning_until=now + syscalls.learning_period_seconds,
                max_alerts=syscalls.max_alerts,
                baselines=baselines,
            )
            if old is not None and old.alerts is not None:
                alerts.carry_over(old.alerts)
        dns = None
        if target.dns is not None:
            dns = old.dns if old is not None and old.dns is not None else SessionDns()
        earlier = self._restored.pop(target.uid, None)
        if earlier is not None and old is None and dns is not None and earlier.dns is not None:
            dns.restore(earlier=earlier.dns)
        if earlier is not None and old is None:
            if flows is not None:
                flows.restore(
                    bytes_=earlier.bytes, packets=earlier.packets,
                    flow_count=earlier.flow_count, rows=earlier.flows,
                )  # fmt: skip
                flows.tcp = TcpTotals(
                    earlier.retransmits, earlier.resets_sent, earlier.resets_received,
                    earlier.connects, earlier.connect_latency_sum_ms,
                )  # fmt: skip
            if alerts is not None:
                alerts.restore(alert_count=earlier.alert_count, rows=earlier.alerts)
        return SessionState(target=target, flows=flows, alerts=alerts, dns=dns)

    def resync(self) -> None:
        """Resolve pods to cgroups and veths, then attach/detach to match. Safe to repeat."""
        pods = all_pods(sessions=self._targets)
        self._resolved = self._resolve(pods=pods)
        network_pods = {
            pod.uid for t in self._targets if t.network for pod in t.pods if not pod.host_network
        }
        wanted_ifaces = {
            veth.name: veth.ifindex
            for uid, veth in self._resolved.veths.items()
            if uid in network_pods
        }
        if FLOWS in self._dataplane.loaded_probes():
            for name in sorted(set(self._attached) - set(wanted_ifaces)):
                self._safely(
                    f"detach {name}",
                    partial(self._dataplane.detach_interface, ifname=name),
                    probe=FLOWS,
                )
                self._attached.pop(name, None)
            for name, index in sorted(wanted_ifaces.items()):
                if name not in self._attached and self._attach(name=name):
                    self._attached[name] = index
        self._configure_host_cgroups(pods=pods)
        self._configure_syscalls(pods=pods)
        self._configure_dns(pods=pods)
        pod_by_ifindex = {
            veth.ifindex: uid for uid, veth in self._resolved.veths.items()
            if veth.name in self._attached
        }  # fmt: skip
        self._configure_flow_filters(pod_by_ifindex=pod_by_ifindex)
        pod_by_cgroup = {cgroup_id: uid for uid, cgroup_id in self._host_cgroups.values()}
        self._router = FlowRouter(
            sessions=self._targets, pod_by_ifindex=pod_by_ifindex, pod_by_cgroup=pod_by_cgroup
        )
        self._pod_key_by_cgroup = {
            cgroup_id: (pods[uid].namespace, pods[uid].name)
            for cgroup_id, uid in pod_by_cgroup.items() if uid in pods
        }  # fmt: skip
        self._pods_by_ip = {
            ip: PodName(pod.namespace, pod.name)
            for pod in pods.values() if not pod.host_network for ip in pod.ips
        }  # fmt: skip
        self._pod_key_by_ifindex = {
            index: (pods[uid].namespace, pods[uid].name) for index, uid in pod_by_ifindex.items()
        }
        self._configure_tcp(pods=pods)
        present = {(pod.namespace, pod.name) for pod in pods.values()}
        self.pod_metrics.retain(present=present)
        self.dns_counts.forget(gone={k for k in self.dns_counts.queries if k not in present})

    def _configure_flow_filters(self, *, pod_by_ifindex: Mapping[int, str]) -> None:
        """Give each attached veth the union of its pod's sessions' flow filters."""
        if FLOWS not in self._dataplane.loaded_probes():
            self._filter_unapplied = {}
            return
        filters = kernel_filters(sessions=self._targets, pod_by_ifindex=pod_by_ifindex)
        problems: Mapping[int, str] = {}

        def apply() -> None:
            nonlocal problems
            problems = self._dataplane.set_flow_filters(filters=filters)

        if not self._safely("set flow filters", apply, probe=FLOWS):
            return  # every session using the flow probe shows that failure already
        self.filter_write_failures += len(problems)
        unapplied = {pod_by_ifindex[i]: why for i, why in problems.items() if i in pod_by_ifindex}
        for uid, why in sorted(unapplied.items()):
            if self._filter_unapplied.get(uid) != why:
                # that interface counts everything; each session still filters its own rows
                log.warning("kernel flow filter of pod %s not applied: %s", uid, why)
        self._filter_unapplied = unapplied

    @property
    def filter_unapplied_pods(self) -> int:
        """Pods whose veth counts everything because their kernel flow filter was refused."""
        return len(self._filter_unapplied)

    def _configure_dns(self, *, pods: Mapping[str, AgentPod]) -> None:
        """Attach the DNS probe to the veths of the DNS sessions' pods (alongside flows)."""
        dns_pods = {
            pod.uid for t in self._targets if t.dns for pod in t.pods if not pod.host_network
        }
        wanted = {
            veth.name: veth.ifindex for uid, veth in self._resolved.veths.items() if uid in dns_pods
        }
        if DNS in self._dataplane.loaded_probes():
            plane = cast(DnsDataPlane, self._dataplane)
            for name in sorted(set(self._dns_attached) - set(wanted)):
                self._safely(
                    f"detach DNS from {name}",
                    partial(plane.detach_dns_interface, ifname=name),
                    probe=DNS,
                )
                self._dns_attached.pop(name, None)
            self._safely("re-attach DNS", partial(self._repair_dns, plane), probe=DNS)
            for name, index in sorted(wanted.items()):
                if name in self._dns_attached:
                    continue
                try:
                    plane.attach_dns_interface(ifname=name)
                except Orb8Error as err:
                    log.warning("attach DNS to %s failed: %s", name, err)
                    for uid, veth in self._resolved.veths.items():
                        if veth.name == name:
                            self._resolved.problems[uid] = (
                                f"DNS probe not attached to {name}: {err}"
                            )
                    continue
                self._dns_attached[name] = index
        self._dns_pod_by_ifindex = {
            veth.ifindex: pods[uid] for uid, veth in self._resolved.veths.items()
            if veth.name in self._dns_attached and uid in pods
        }  # fmt: skip

    @staticmethod
    def _repair_dns(plane: DnsDataPlane) -> None:
        # the flow probe removes a clsact qdisc it created when it detaches,
        # taking our filter with it if we still used that interface
        for name in plane.repair_dns():
            log.info("DNS probe re-attached to %s (its qdisc had been removed)", name)

    def _configure_tcp(self, *, pods: Mapping[str, AgentPod]) -> None:
        """Watch the network namespaces of pods whose sessions want TCP health."""
        pod_by_netns = {inode: uid for uid, inode in self._resolved.netns.items() if uid in pods}
        self._tcp_router = TcpHealthRouter(sessions=self._targets, pod_by_netns=pod_by_netns)
        self._pod_key_by_netns = {
            inode: (pods[uid].namespace, pods[uid].name) for inode, uid in pod_by_netns.items()
        }
        if TCP not in self._dataplane.loaded_probes():
            return
        inodes = self._tcp_router.watched_netns
        self._safely(
            "watch network namespaces",
            lambda: self._dataplane.set_watched_netns(inodes=inodes),
            probe=TCP,
        )

    def _configure_host_cgroups(self, *, pods: Mapping[str, AgentPod]) -> None:
        """Attach the hostNetwork probe to each hostNetwork target pod's cgroup directory
        (the parent of its containers' directories), detach from pods that went away."""
        host_pods = {
            pod.uid for t in self._targets if t.network for pod in t.pods if pod.host_network
        }
        wanted: dict[Path, str] = {}
        for uid in sorted(host_pods):
            for _, container_id in container_ids(pod=pods[uid]):
                cgroup = self._resolved.cgroups.get(container_id)
                if cgroup is not None:
                    wanted[cgroup.path.parent] = uid
                    break
        if HOSTFLOWS not in self._dataplane.loaded_probes():
            return
        for path in sorted(set(self._host_cgroups) - set(wanted)):
            self._safely(
                f"detach {path}",
                partial(self._dataplane.detach_cgroup, path=path),
                probe=HOSTFLOWS,
            )
            self._host_cgroups.pop(path, None)
        for path, uid in sorted(wanted.items()):
            known = self._host_cgroups.get(path)
            if known is not None and known[0] == uid:
                continue
            try:
                cgroup_id = self._dataplane.attach_cgroup(path=path)
            except Orb8Error as err:
                log.warning("attach %s failed: %s", path, err)
                self._resolved.problems[uid] = f"hostNetwork probe not attached to {path}: {err}"
                continue
            self._host_cgroups[path] = (uid, cgroup_id)

    def _configure_syscalls(self, *, pods: Mapping[str, AgentPod]) -> None:
        refs: dict[int, ContainerRef] = {}
        for pod in pods.values():
            for name, container_id in container_ids(pod=pod):
                cgroup = self._resolved.cgroups.get(container_id)
                if cgroup is not None:
                    refs[cgroup.cgroup_id] = ContainerRef(pod.namespace, pod.name, pod.uid, name)
        self._container_refs = refs
        self._track_baselines()
        if SYSCALLS not in self._dataplane.loaded_probes():
            return
        syscall_pods = {pod.uid for t in self._targets if t.syscalls for pod in t.pods}
        watched = [cid for cid, ref in refs.items() if ref.pod_uid in syscall_pods]
        names = sorted({n for t in self._targets if t.syscalls for n in t.syscalls.alert_on})
        self._safely(
            "watch cgroups",
            lambda: self._dataplane.set_watched_cgroups(cgroup_ids=watched),
            probe=SYSCALLS,
        )
        known = [n for n in names if syscall_names.is_known(name=n)]
        self._safely(
            "set alert list",
            lambda: self._dataplane.set_alert_syscalls(names=known),
            probe=SYSCALLS,
        )

    def _track_baselines(self) -> None:
        """Tell each session's baselines which of its containers run here now (and their ids)."""
        now = self._clock()
        for state in self._sessions.values():
            baselines = state.alerts.baselines if state.alerts is not None else None
            if baselines is None or state.stopped:
                continue
            uids = {pod.uid for pod in state.target.pods}
            baselines.track(
                containers={
                    (ref.namespace, ref.pod, ref.container): cgroup_id
                    for cgroup_id, ref in self._container_refs.items() if ref.pod_uid in uids
                },
                now=now,
            )  # fmt: skip

    @staticmethod
    def _unknown_syscalls(*, names: Collection[str]) -> list[str]:
        """Names on an alert list that this node's architecture has no syscall for."""
        return sorted(n for n in names if not syscall_names.is_known(name=n))

    def _resolve(self, *, pods: Mapping[str, AgentPod]) -> _Resolved:
        resolved = _Resolved()
        ids = [cid for pod in pods.values() for _, cid in container_ids(pod=pod)]
        resolved.cgroups = find_container_cgroups(root=self._cgroup_root, container_ids=ids)
        for pod in pods.values():
            cgroups = [resolved.cgroups[cid] for _, cid in container_ids(pod=pod)
                       if cid in resolved.cgroups]  # fmt: skip
            if not cgroups:
                resolved.problems[pod.uid] = f"no cgroup found for any container of {pod.name}"
                continue
            if pod.host_network:
                continue  # shares the host's interfaces; attributed by cgroup only
            self._resolve_netns(pod=pod, cgroups=cgroups, into=resolved)
            known = self._resolved.veths.get(pod.uid)
            if known is not None:
                resolved.veths[pod.uid] = known
                continue
            pids = [pid for cgroup in cgroups for pid in pids_in(path=cgroup.path)]
            if not pids:
                resolved.problems[pod.uid] = f"no running process in {pod.name}"
                continue
            try:
                resolved.veths[pod.uid] = self._veth_of(pids[0])
            except VethNotFoundError as err:
                resolved.problems[pod.uid] = str(err)
        return resolved

    def _resolve_netns(
        self, *, pod: AgentPod, cgroups: Sequence[ContainerCgroup], into: _Resolved
    ) -> None:
        """The pod's network namespace inode (TCP health is keyed by it); kept once known."""
        known = self._resolved.netns.get(pod.uid)
        if known is not None:
            into.netns[pod.uid] = known
            return
        for cgroup in cgroups:
            for pid in pids_in(path=cgroup.path):
                try:
                    into.netns[pod.uid] = self._netns_of(pid)
                    return
                except Orb8Error as err:
                    log.debug("netns of pid %d in %s: %s", pid, pod.name, err)

    def _attach(self, *, name: str) -> bool:
        """Attach the flow probe to ``name``; a failure is filed under the pod it serves."""
        try:
            self._dataplane.attach_interface(ifname=name)
        except Orb8Error as err:
            log.warning("attach %s failed: %s", name, err)
            for uid, veth in self._resolved.veths.items():
                if veth.name == name:
                    self._resolved.problems[uid] = f"flow probe not attached to {name}: {err}"
            return False
        return True

    def _safely(self, what: str, action: Callable[[], None], *, probe: str) -> bool:
        """Run a node-wide data-plane change; a failure shows in every session using ``probe``."""
        try:
            action()
        except Orb8Error as err:
            log.warning("%s failed: %s", what, err)
            self._resolved.node_problems[what] = (probe, f"{what} failed: {err}")
            return False
        return True

    def set_services(self, *, index: ServiceIndex) -> None:
        """Adopt a new snapshot of the cluster's Services and EndpointSlices."""
        self.services.set_index(index=index)

    @property
    def wants_services(self) -> bool:
        """Whether any served session counts flows (and so may talk to a Service)."""
        return any(t.network for t in self._targets)

    # -- collection ----------------------------------------------------------------------------

    def collect(self) -> None:
        """Drain the flow map into the sessions' accumulators (right before a report).

        Flows stay in the kernel map until a report is built; with the map
        pinned, what was not reported yet survives an agent restart.
        """
        now = self._clock()
        if self._dataplane.loaded_probes() & {FLOWS, HOSTFLOWS}:
            observations = self._dataplane.read_flows()
            self.pod_metrics.add_flows(
                flows=observations, pod_of=self._pod_key_by_ifindex,
                pod_of_cgroup=self._pod_key_by_cgroup,
            )  # fmt: skip
            self.services.begin_drain()
            for observation in observations:
                service = self.services.attribute(
                    src_ip=observation.src_ip, src_port=observation.src_port,
                    dst_ip=observation.dst_ip, dst_port=observation.dst_port,
                    protocol=observation.protocol_name,
                )  # fmt: skip
                host_pod = (
                    self._pod_key_by_cgroup.get(observation.cgroup_id)
                    if observation.cgroup_id else None
                )  # fmt: skip
                for target in self._router.route(observation=observation):
                    state = self._sessions.get(target.uid)
                    if state is not None and state.flows is not None and not state.stopped:
                        state.flows.add(
                            observation=observation, now=now, host_pod=host_pod, service=service
                        )
        if TCP in self._dataplane.loaded_probes():
            self._collect_tcp(now=now)
        if DNS in self._dataplane.loaded_probes():
            self._collect_dns(rows=cast(DnsDataPlane, self._dataplane).read_dns())
        self.poll_alerts()

    def _collect_tcp(self, *, now: float) -> None:
        """Join the sockets' TCP health to the flows (after them, so the rows exist)."""
        rows = self._dataplane.read_tcp_health()
        self.pod_metrics.add_tcp(rows=rows, pod_of=self._pod_key_by_netns)
        for health in rows:
            for target in self._tcp_router.route(health=health):
                state = self._sessions.get(target.uid)
                if state is not None and state.flows is not None and not state.stopped:
                    state.flows.add_tcp(health=health, now=now)

    def _collect_dns(self, *, rows: Sequence[DnsRow]) -> None:
        """Route the DNS probe's rows to the sessions of the pod whose veth saw them."""
        sessions = [s for s in self._sessions.values() if s.dns is not None and not s.stopped]
        for row in rows:
            pod = self._dns_pod_by_ifindex.get(row.key.ifindex)
            if pod is None:
                continue
            name = PodName(pod.namespace, pod.name)
            key = (pod.namespace, pod.name)
            self.pod_metrics.slots.admit(weights={key: 0})  # the same cap as traffic
            self.dns_counts.add(pod=self.pod_metrics.slots.label(key), row=row)
            client_is_pod = row.key.client_ip in pod.ips
            for state in sessions:
                targets = state.target.pods
                if not any(p.uid == pod.uid for p in targets):
                    continue
                if not client_is_pod and any(
                    row.key.client_ip in p.ips for p in targets if not p.host_network
                ):
                    continue  # the client is another target here: counted at its own veth
                assert state.dns is not None
                state.dns.add(pod=name, row=row)

    def poll_alerts(self) -> None:
        """Read the syscall ring buffer into the sessions' alerts (every tick: it is bounded),
        and the per-syscall counts into the sessions' baselines."""
        if SYSCALLS not in self._dataplane.loaded_probes():
            return
        now = self._clock()
        self._poll_events(now=now)
        self._poll_counts(now=now)
        self._save_baselines()

    def _poll_events(self, *, now: float) -> None:
        for event in self._dataplane.poll_alerts():
            ref = self._container_refs.get(event.cgroup_id)
            if ref is None:
                continue
            self.pod_metrics.add_alert(pod=(ref.namespace, ref.pod), syscall=event.name)
            for state in self._sessions.values():
                if state.alerts is None or state.stopped:
                    continue
                if any(pod.uid == ref.pod_uid for pod in state.target.pods):
                    state.alerts.add(ref=ref, event=event, now=now)

    def _poll_counts(self, *, now: float) -> None:
        """Drain the kernel's per-(cgroup, syscall) counts; close the baselines' windows.

        The count map is drained on every tick while any session learns or
        judges a baseline, so each drain holds about one tick of calls.
        """
        learning = [
            s for s in self._sessions.values()
            if s.alerts is not None and s.alerts.baselines is not None and not s.stopped
        ]  # fmt: skip
        if not learning:
            return
        by_container: dict[int, list[tuple[str, int]]] = {}
        for count in self._dataplane.read_counts():
            by_container.setdefault(count.cgroup_id, []).append((count.name, count.count))
        refs: dict[ContainerKey, ContainerRef] = {
            (ref.namespace, ref.pod, ref.container): ref for ref in self._container_refs.values()
        }
        for state in learning:
            alerts = state.alerts
            assert alerts is not None
            uids = {pod.uid for pod in state.target.pods}
            for cgroup_id, counts in by_container.items():
                owner = self._container_refs.get(cgroup_id)
                if owner is not None and owner.pod_uid in uids:
                    alerts.add_counts(ref=owner, counts=counts)
            alerts.close_window(refs=refs, now=now)
            for ref, reason in alerts.baseline_alerts:
                self.pod_metrics.add_baseline_alert(pod=(ref.namespace, ref.pod), reason=reason)
            alerts.baseline_alerts.clear()

    def _save_baselines(self) -> None:
        """Write every served session's baselines when one of them changed."""
        if self._baseline_path is None:
            return
        served = {
            uid: s.alerts.baselines for uid, s in self._sessions.items()
            if s.alerts is not None and s.alerts.baselines is not None and not s.stopped
        }  # fmt: skip
        if set(served) == self._saved_uids and not any(b.dirty for b in served.values()):
            return
        if not served:
            baseline_store.remove(path=self._baseline_path)
            self._saved_uids = set()
            return
        snapshots = {uid: b.snapshot() for uid, b in served.items()}
        if baseline_store.save(path=self._baseline_path, sessions=snapshots):
            self._saved_uids = set(served)
            for b in served.values():
                b.dirty = False

    def baseline_windows(self) -> dict[str, int]:
        """Container windows learned and judged so far, over the sessions served."""
        out = {"learned": 0, "judged": 0}
        for state in self._sessions.values():
            if state.alerts is not None:
                out["learned"] += state.alerts.windows_learned
                out["judged"] += state.alerts.windows_judged
        return out

    def baseline_containers(self) -> dict[str, int]:
        """Containers whose baseline is learning, or learned, now."""
        now = self._clock()
        out = {"learning": 0, "learned": 0}
        for state in self._sessions.values():
            baselines = state.alerts.baselines if state.alerts is not None else None
            if baselines is None or state.stopped:
                continue
            for container in baselines.containers().values():
                out["learning" if container.learning(now=now) else "learned"] += 1
        return out

    # -- reporting ---------------------------------------------------------------------------

    def reports(self, *, scale: float = 1.0) -> list[SessionReport]:
        """Every session's share now; a session dropped from the config reports once more.

        ``scale`` (0..1) shrinks each session's topFlows/maxAlerts so the whole
        node report fits its byte budget. Call :meth:`forget_stopped` once the
        report was written.
        """
        now = self._clock()
        return [self._report(state=s, now=now, scale=scale) for s in self._sessions.values()]

    def forget_stopped(self) -> None:
        """Drop sessions whose last (Stopped) report has been written."""
        for uid in [uid for uid, s in self._sessions.items() if s.stopped]:
            del self._sessions[uid]

    def final_reports(self, *, scale: float = 1.0) -> list[SessionReport]:
        """Every session's entry marked Stopped (the agent is shutting down)."""
        for state in self._sessions.values():
            state.stopped = True
        return self.reports(scale=scale)

    def report_interval(self) -> float | None:
        """The shortest reportInterval among the sessions served; None when there are none."""
        intervals = [s.target.report_interval_s for s in self._sessions.values() if not s.stopped]
        if not intervals and self._sessions:
            return 0.0  # only stopped sessions: report them now
        return min(intervals) if intervals else None

    def _report(self, *, state: SessionState, now: float, scale: float) -> SessionReport:
        target = state.target
        return SessionReport(
            uid=target.uid,
            kind=target.session.kind,
            namespace=target.namespace,
            name=target.name,
            generation=target.generation,
            trace=self.entry(state=state, now=now, scale=scale),
        )

    def entry(self, *, state: SessionState, now: float, scale: float = 1.0) -> NodeEntry:
        target = state.target
        loaded = self._dataplane.loaded_probes()
        errors = self._dataplane.probe_errors()
        wanted: set[str] = set()
        if target.network:
            # veth pods need the tc probe, hostNetwork pods the cgroup_skb one
            host = [pod.host_network for pod in target.pods]
            wanted |= {HOSTFLOWS} if any(host) else set()
            wanted |= {FLOWS} if not all(host) or not host else set()
        wanted |= {SYSCALLS} if target.syscalls else set()
        wanted |= {TCP} if wants_tcp_health(session=target) else set()
        wanted |= {DNS} if target.dns else set()
        missing = sorted(wanted - loaded)
        # libbpf's log after " | " stays in NodeAgentConfig status and the agent log:
        # the session's one line names each probe, its errno and the remedy
        problems = [
            f"{p} probe unavailable: {errors.get(p, 'not loaded').split(' | ', 1)[0]}"
            for p in missing
        ]
        problems += [
            f"{pod.namespace}/{pod.name}: {self._resolved.problems[pod.uid]}"
            for pod in target.pods if pod.uid in self._resolved.problems
        ]  # fmt: skip
        problems += [why for probe, why in self._resolved.node_problems.values() if probe in wanted]
        unfiltered = 0
        if target.network is not None and FLOWS in wanted & loaded:
            unfiltered, line = unapplied_problem(
                filter_=target.network.filter, pods=target.pods, unapplied=self._filter_unapplied
            )
            problems += [line] if line else []
        if target.syscalls is not None and SYSCALLS in loaded:
            unknown = self._unknown_syscalls(names=target.syscalls.alert_on)
            if unknown:
                problems.append(
                    f"alertOn {', '.join(unknown)}: no such syscall on this node's architecture "
                    f"({syscall_names.machine()}), not watched"
                )
        phase: NodeState
        if state.stopped:
            phase = "Stopped"
        elif missing and missing == sorted(wanted):
            phase = "Failed"
        elif problems:
            phase = "Degraded"
        else:
            phase = "Running"
        network, syscalls = target.network, target.syscalls
        entry = trace_node_entry(
            node=self.node, state=phase, probes=sorted(wanted & loaded),
            message="; ".join(problems)[:1024], now=now, flows=state.flows,
            top_flows=int(network.top_flows * scale) if network else 0,
            alerts=state.alerts,
            max_alerts=int(syscalls.max_alerts * scale) if syscalls else 0,
            pods_by_ip=self._pods_by_ip, dropped_events=self._dataplane.dropped_events(),
            tcp_health=TCP in wanted & loaded, unfiltered_pods=unfiltered,
        )  # fmt: skip
        share = dns_share(
            dns=state.dns if target.dns is not None else None, probe_loaded=DNS in loaded,
            node=self.node, top=int(target.dns.top_names * scale) if target.dns else 0,
        )  # fmt: skip
        return entry if share is None else entry.model_copy(update={"dns": share})

    def shutdown(self) -> None:
        """Detach from every interface (the data plane unloads itself)."""
        for name in sorted(self._attached):
            self._safely(
                f"detach {name}",
                partial(self._dataplane.detach_interface, ifname=name),
                probe=FLOWS,
            )
        self._attached.clear()
        if DNS in self._dataplane.loaded_probes():
            plane = cast(DnsDataPlane, self._dataplane)
            for name in sorted(self._dns_attached):
                self._safely(
                    f"detach DNS from {name}",
                    partial(plane.detach_dns_interface, ifname=name),
                    probe=DNS,
                )
        self._dns_attached.clear()
        for path in sorted(self._host_cgroups):
            self._safely(
                f"detach {path}",
                partial(self._dataplane.detach_cgroup, path=path),
                probe=HOSTFLOWS,
            )
        self._host_cgroups.clear()

    @property
    def attached_cgroups(self) -> dict[Path, int]:
        """hostNetwork pods' cgroup directories the probe is attached to → cgroup ids."""
        return {path: cgroup_id for path, (_, cgroup_id) in self._host_cgroups.items()}

    @property
    def attached_interfaces(self) -> frozenset[str]:
        return frozenset(self._attached)

    @property
    def dns_interfaces(self) -> frozenset[str]:
        return frozenset(self._dns_attached)

    @property
    def tracked_pods(self) -> int:
        """Target pods of the trace sessions on this node."""
        return len(all_pods(sessions=self._targets))

    def sessions(self) -> list[SessionState]:
        return list(self._sessions.values())

    def dropped_events(self) -> int:
        return self._dataplane.dropped_events()
