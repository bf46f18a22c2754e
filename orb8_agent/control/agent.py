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
from typing import Protocol

from orb8_agent.control.alerts import ContainerRef, SessionAlerts
from orb8_agent.control.conntrack import ConntrackReader
from orb8_agent.control.containers import ContainerCgroup, find_container_cgroups, pids_in
from orb8_agent.control.flows import FlowRouter, SessionFlows
from orb8_agent.control.report import PodName, trace_node_entry
from orb8_agent.control.served import TRACE_SESSION, Served, all_pods, container_ids
from orb8_agent.control.services import Conntrack, ServiceAttributor, ServiceIndex
from orb8_agent.control.veth import HostVeth, VethNotFoundError, host_veth_of
from orb8_agent.dataplane import syscall_names
from orb8_agent.dataplane.models import Alert, Flow
from orb8_agent.podmetrics import PodMetrics
from orb8_common.errors import Orb8Error
from orb8_common.models import AgentPod, NodeEntry, NodeState, SessionReport

log = logging.getLogger(__name__)

FLOWS, SYSCALLS, HOSTFLOWS = "flows", "syscalls", "hostflows"


class DataPlane(Protocol):
    """What the reconciler needs from the loaded BPF probes."""

    def loaded_probes(self) -> frozenset[str]: ...
    def probe_errors(self) -> Mapping[str, str]: ...
    def attach_interface(self, *, ifname: str) -> None: ...
    def detach_interface(self, *, ifname: str) -> None: ...
    def attach_cgroup(self, *, path: Path) -> int: ...
    def detach_cgroup(self, *, path: Path) -> None: ...
    def set_watched_cgroups(self, *, cgroup_ids: Collection[int]) -> None: ...
    def set_alert_syscalls(self, *, names: Collection[str]) -> None: ...
    def read_flows(self) -> Sequence[Flow]: ...
    def poll_alerts(self) -> Sequence[Alert]: ...
    def dropped_events(self) -> int: ...


VethResolver = Callable[[int], HostVeth]


@dataclass
class SessionState:
    target: Served
    flows: SessionFlows | None
    alerts: SessionAlerts | None
    stopped: bool = False


@dataclass
class _Resolved:
    cgroups: dict[str, ContainerCgroup] = field(default_factory=dict)  # by container id
    veths: dict[str, HostVeth] = field(default_factory=dict)  # by pod uid
    problems: dict[str, str] = field(default_factory=dict)  # pod uid → why unresolved
    node_problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # what → (probe, why)


class NodeAgent:
    """Keeps the data plane in step with NodeAgentConfig/<node> and accounts per session."""

    def __init__(
        self, *, node: str, dataplane: DataPlane, cgroup_root: Path,
        clock: Callable[[], float] = time.time, veth_resolver: VethResolver | None = None,
        pod_metrics: PodMetrics | None = None, conntrack: Conntrack | None = None,
    ) -> None:  # fmt: skip
        self.node = node
        self._dataplane = dataplane
        self._cgroup_root = cgroup_root
        self._clock = clock
        self._veth_of: VethResolver = veth_resolver or (lambda pid: host_veth_of(pid=pid))
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
            alerts = SessionAlerts(
                alert_on=syscalls.alert_on,
                learning_until=now + syscalls.learning_period_seconds,
                max_alerts=syscalls.max_alerts,
            )
            if old is not None and old.alerts is not None:
                alerts.carry_over(old.alerts)
        earlier = self._restored.pop(target.uid, None)
        if earlier is not None and old is None:
            if flows is not None:
                flows.restore(
                    bytes_=earlier.bytes, packets=earlier.packets,
                    flow_count=earlier.flow_count, rows=earlier.flows,
                )  # fmt: skip
            if alerts is not None:
                alerts.restore(alert_count=earlier.alert_count, rows=earlier.alerts)
        return SessionState(target=target, flows=flows, alerts=alerts)

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
        pod_by_ifindex = {
            veth.ifindex: uid for uid, veth in self._resolved.veths.items()
            if veth.name in self._attached
        }  # fmt: skip
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
        self.pod_metrics.retain(present={(pod.namespace, pod.name) for pod in pods.values()})

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
        self.poll_alerts()

    def poll_alerts(self) -> None:
        """Read the syscall ring buffer into the sessions' alerts (every tick: it is bounded)."""
        if SYSCALLS not in self._dataplane.loaded_probes():
            return
        now = self._clock()
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
        missing = sorted(wanted - loaded)
        problems = [f"{p} probe unavailable: {errors.get(p, 'not loaded')}" for p in missing]
        problems += [
            f"{pod.namespace}/{pod.name}: {self._resolved.problems[pod.uid]}"
            for pod in target.pods if pod.uid in self._resolved.problems
        ]  # fmt: skip
        problems += [why for probe, why in self._resolved.node_problems.values() if probe in wanted]
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
        return trace_node_entry(
            node=self.node, state=phase, probes=sorted(wanted & loaded),
            message="; ".join(problems)[:1024], now=now, flows=state.flows,
            top_flows=int(network.top_flows * scale) if network else 0,
            alerts=state.alerts,
            max_alerts=int(syscalls.max_alerts * scale) if syscalls else 0,
            pods_by_ip=self._pods_by_ip, dropped_events=self._dataplane.dropped_events(),
        )  # fmt: skip

    def shutdown(self) -> None:
        """Detach from every interface (the data plane unloads itself)."""
        for name in sorted(self._attached):
            self._safely(
                f"detach {name}",
                partial(self._dataplane.detach_interface, ifname=name),
                probe=FLOWS,
            )
        self._attached.clear()
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
    def tracked_pods(self) -> int:
        """Target pods of the trace sessions on this node."""
        return len(all_pods(sessions=self._targets))

    def sessions(self) -> list[SessionState]:
        return list(self._sessions.values())

    def dropped_events(self) -> int:
        return self._dataplane.dropped_events()
