"""Which sessions a socket's TCP health belongs to.

The TCP health probe fires in softirq and timer context, so it cannot ask
"which task"; it keys every figure by the socket's own 4-tuple and network
namespace. A pod's namespace is the pod (hostNetwork pods share the node's,
and are left out), so the namespace inode names the pod, and the 4-tuple,
local end first, names the flow row: the one whose source is that socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orb8_agent.control.served import Served
from orb8_agent.dataplane.models import TcpHealth


def wants_tcp_health(*, session: Served) -> bool:
    """The session traces TCP flows and asked for their health (the default)."""
    network = session.network
    return network is not None and network.tcp_health and "TCP" in network.protocols


def _wanted(*, session: Served, health: TcpHealth) -> bool:
    """The socket passes the session's flow filter (its peer is the remote end)."""
    network = session.network
    if network is None or not network.filter.filters:
        return True
    return network.filter.matches(
        protocol="TCP", ports=(health.local_port, health.remote_port), peer_ip=health.remote_ip
    )


class TcpHealthRouter:
    """netns inode → pod → the sessions that want that pod's TCP health."""

    def __init__(self, *, sessions: Iterable[Served], pod_by_netns: Mapping[int, str]) -> None:
        self._pod_by_netns = dict(pod_by_netns)
        self._sessions_by_pod: dict[str, list[Served]] = {}
        for session in sessions:
            if not wants_tcp_health(session=session):
                continue
            for pod in session.pods:
                if not pod.host_network:
                    self._sessions_by_pod.setdefault(pod.uid, []).append(session)

    def pod_of(self, *, health: TcpHealth) -> str | None:
        return self._pod_by_netns.get(health.netns)

    def route(self, *, health: TcpHealth) -> list[Served]:
        pod_uid = self._pod_by_netns.get(health.netns)
        if pod_uid is None:
            return []
        return [
            session
            for session in self._sessions_by_pod.get(pod_uid, ())
            if _wanted(session=session, health=health)
        ]

    @property
    def watched_netns(self) -> frozenset[int]:
        """The namespaces of pods some session wants TCP health of."""
        return frozenset(
            inode for inode, uid in self._pod_by_netns.items() if uid in self._sessions_by_pod
        )
