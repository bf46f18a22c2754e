"""Per-session flow accounting on one node.

The flow probe reports per-interface deltas: which host veth the packet
crossed and in which tc direction. A packet the pod sends arrives on the
host side of its veth as tc *ingress*, so pod-relative direction is the
opposite of the hook's.

Same-node pod-to-pod traffic crosses two target veths. It is counted once:
at the sender's veth when the sender is one of the session's targets here
and the session counts egress; otherwise at the receiver's veth.

hostNetwork pods have no veth: the hostNetwork probe counts their sockets'
packets by pod cgroup (``Flow.cgroup_id``), already in the pod's direction.
Traffic between two hostNetwork targets of one session on one node is
counted at both pods (nothing on the wire tells the two ends apart).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orb8_agent.control.served import Served
from orb8_agent.control.services import Backend
from orb8_agent.dataplane.models import Flow, TcpHealth
from orb8_common.models import Flow as FlowRow

FlowKey = tuple[str, int, str, int, str]  # src ip, src port, dst ip, dst port, protocol


@dataclass
class FlowStats:
    bytes: int
    packets: int
    first_seen: float
    last_seen: float
    tcp_flags: int
    # TCP health of the source's socket (see orb8_agent.control.tcphealth)
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    connects: int = 0
    connect_ms_total: float = 0.0

    @property
    def connect_latency_ms(self) -> float | None:
        return self.connect_ms_total / self.connects if self.connects else None

    # a hostNetwork pod's flow: (namespace, name, "source" | "destination"), the
    # end that is the pod (its IP is the node's, so the IP cannot name it)
    host_pod: tuple[str, str, str] | None = None
    # one end is a ClusterIP Service: "ns/name:port", and its backend where known
    service: str = ""
    backend: Backend | None = None


def pod_direction(*, hook_direction: str) -> str:
    """Direction relative to the pod for a packet seen on its host-side veth."""
    return "egress" if hook_direction == "ingress" else "ingress"


@dataclass
class TcpTotals:
    """A session's TCP health on this node, over every socket (not only listed flows)."""

    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    connects: int = 0
    connect_ms_total: float = 0.0

    def add(self, *, health: TcpHealth) -> None:
        self.retransmits += health.retransmits
        self.resets_sent += health.resets_sent
        self.resets_received += health.resets_received
        self.connects += health.connects
        self.connect_ms_total += health.connect_ns_total / 1e6


def observation_direction(*, observation: Flow) -> str:
    """Pod-relative direction of a tc (veth) or hostNetwork (cgroup) observation."""
    if observation.cgroup_id:
        return observation.direction
    return pod_direction(hook_direction=observation.direction)


class SessionFlows:
    """Accumulated flows of one session on this node, bounded in memory."""

    def __init__(self, *, max_tracked: int = 20_000) -> None:
        self._flows: dict[FlowKey, FlowStats] = {}
        self._max_tracked = max_tracked
        self.bytes = 0
        self.packets = 0
        self.untracked_flows = 0
        self.tcp = TcpTotals()

    def restore(
        self, *, bytes_: int, packets: int, flow_count: int, rows: Iterable[FlowRow]
    ) -> None:
        """Continue from a previous report of this session (after an agent restart).

        The listed flows come back as flows (so a flow seen again is not counted
        twice); flows beyond the report's top-N only survive as a count.
        """
        for row in rows:
            key: FlowKey = (
                row.source.ip, row.source.port or 0,
                row.destination.ip, row.destination.port or 0, row.protocol,
            )  # fmt: skip
            first = row.first_seen.timestamp() if row.first_seen else 0.0
            last = row.last_seen.timestamp() if row.last_seen else first
            latency = row.connect_latency_ms
            self._flows[key] = FlowStats(
                row.bytes, row.packets, first, last, 0,
                retransmits=row.retransmits or 0, resets_sent=row.resets_sent or 0,
                resets_received=row.resets_received or 0, connects=1 if latency is not None else 0,
                connect_ms_total=latency or 0.0,
            )  # fmt: skip
        self.bytes, self.packets = bytes_, packets
        self.untracked_flows = max(0, flow_count - len(self._flows))

    def add(
        self,
        *,
        observation: Flow,
        now: float,
        host_pod: tuple[str, str] | None = None,
        service: tuple[str, Backend | None] | None = None,
    ) -> None:
        self.bytes += observation.bytes
        self.packets += observation.packets
        key: FlowKey = (
            observation.src_ip, observation.src_port,
            observation.dst_ip, observation.dst_port, observation.protocol_name,
        )  # fmt: skip
        stats = self._flows.get(key)
        if stats is None:
            if len(self._flows) >= self._max_tracked:
                self.untracked_flows += 1
                return
            stats = self._flows[key] = FlowStats(0, 0, now, now, 0)
        stats.bytes += observation.bytes
        stats.packets += observation.packets
        stats.last_seen = now
        stats.tcp_flags |= observation.tcp_flags
        if host_pod is not None:
            side = "source" if observation.direction == "egress" else "destination"
            stats.host_pod = (host_pod[0], host_pod[1], side)
        if service is not None:
            stats.service = service[0]
            stats.backend = service[1] or stats.backend

    def add_tcp(self, *, health: TcpHealth, now: float) -> None:
        """Join one socket's TCP health to the flow its socket sends (source = the socket).

        The flow usually exists already (the probe drains flows first); when
        it does not (filtered out, or not seen on the veth) it is created
        with no bytes, so a reset or a failed connect is never lost.
        """
        connect_ms = health.connect_ns_total / 1e6
        self.tcp.add(health=health)
        key: FlowKey = (
            health.local_ip,
            health.local_port,
            health.remote_ip,
            health.remote_port,
            "TCP",
        )
        stats = self._flows.get(key)
        if stats is None:
            if len(self._flows) >= self._max_tracked:
                self.untracked_flows += 1
                return
            stats = self._flows[key] = FlowStats(0, 0, now, now, 0)
        stats.retransmits += health.retransmits
        stats.resets_sent += health.resets_sent
        stats.resets_received += health.resets_received
        stats.connects += health.connects
        stats.connect_ms_total += connect_ms

    @property
    def flow_count(self) -> int:
        return len(self._flows) + self.untracked_flows

    def top(self, *, limit: int) -> list[tuple[FlowKey, FlowStats]]:
        ranked = sorted(self._flows.items(), key=lambda item: (-item[1].bytes, item[0]))
        return ranked[:limit]


class FlowRouter:
    """Decides which sessions each observation belongs to."""

    def __init__(
        self,
        *,
        sessions: Iterable[Served],
        pod_by_ifindex: Mapping[int, str],
        pod_by_cgroup: Mapping[int, str] | None = None,
    ) -> None:
        self._pod_by_ifindex = dict(pod_by_ifindex)
        self._pod_by_cgroup = dict(pod_by_cgroup or {})
        self._sessions_by_pod: dict[str, list[Served]] = {}
        self._local_ips: dict[str, set[str]] = {}
        for session in sessions:
            if session.network is None:
                continue
            self._local_ips[session.uid] = {
                ip for pod in session.pods if not pod.host_network for ip in pod.ips
            }
            for pod in session.pods:
                self._sessions_by_pod.setdefault(pod.uid, []).append(session)

    def pod_of(self, *, observation: Flow) -> str | None:
        """The uid of the target pod an observation was made at."""
        if observation.cgroup_id:
            return self._pod_by_cgroup.get(observation.cgroup_id)
        return self._pod_by_ifindex.get(observation.ifindex)

    def route(self, *, observation: Flow) -> list[Served]:
        pod_uid = self.pod_of(observation=observation)
        if pod_uid is None:
            return []
        direction = observation_direction(observation=observation)
        matched = []
        for session in self._sessions_by_pod.get(pod_uid, ()):
            network = session.network
            assert network is not None  # only sessions with network settings are indexed
            if (
                observation.protocol_name not in network.protocols
                or direction not in network.directions
            ):
                continue
            if (
                direction == "ingress"
                and "egress" in network.directions
                and observation.src_ip in self._local_ips[session.uid]
            ):
                continue  # counted at the sender's veth
            if network.filter.filters and not network.filter.matches(
                protocol=observation.protocol_name,
                ports=(observation.src_port, observation.dst_port),
                peer_ip=observation.dst_ip if direction == "egress" else observation.src_ip,
            ):
                continue  # the kernel counts the union of the pod's sessions' filters
            matched.append(session)
        return matched
