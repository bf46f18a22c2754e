"""Joining the TCP health probe's socket rows to a session's flow rows."""

from __future__ import annotations

from orb8_agent.control.flows import SessionFlows
from orb8_agent.control.report import trace_node_entry
from orb8_agent.control.served import Served
from orb8_agent.control.tcphealth import TcpHealthRouter
from orb8_agent.dataplane.models import Flow, TcpHealth
from orb8_common.models import AgentSession, parse_trace_session_spec


def _health(**kw: int) -> TcpHealth:
    base = dict(netns=7, local_ip="10.0.0.1", local_port=40000, remote_ip="10.0.1.1",
                remote_port=8080, retransmits=0, resets_sent=0, resets_received=0, connects=0,
                connect_ns_total=0, connect_ns_max=0)  # fmt: skip
    base.update(kw)
    return TcpHealth(**base)  # type: ignore[arg-type]


def _served(uid: str, network: dict[str, object]) -> Served:
    session = AgentSession.model_validate({
        "uid": uid, "kind": "TraceSession", "namespace": "shop", "name": uid,
        "pods": [{"uid": "pod-a", "namespace": "shop", "name": "client", "ips": ["10.0.0.1"]},
                 {"uid": "pod-h", "namespace": "shop", "name": "hostnet", "hostNetwork": True}],
    })  # fmt: skip
    spec = parse_trace_session_spec({"probes": {"network": {"enabled": True, **network}}})
    return Served(session=session, spec=spec)


def test_health_lands_on_the_row_the_socket_sends() -> None:
    flows = SessionFlows()
    flows.add(observation=Flow("10.0.0.1", "10.0.1.1", 40000, 8080, 6, "ingress", 3, 500, 5,
                               0x12, 0, 0), now=10.0)  # fmt: skip
    flows.add_tcp(health=_health(retransmits=3, connects=1, connect_ns_total=2_500_000), now=11.0)
    flows.add_tcp(health=_health(resets_received=1), now=12.0)
    ((key, stats),) = flows.top(limit=5)
    assert key == ("10.0.0.1", 40000, "10.0.1.1", 8080, "TCP")
    assert (stats.bytes, stats.retransmits, stats.resets_received) == (500, 3, 1)
    assert stats.connect_latency_ms == 2.5
    assert flows.flow_count == 1  # joined, not a second flow
    assert (flows.tcp.retransmits, flows.tcp.connects, flows.tcp.resets_received) == (3, 1, 1)


def test_a_reset_without_a_flow_row_makes_one() -> None:
    flows = SessionFlows()
    flows.add_tcp(health=_health(resets_sent=1, local_port=9, remote_port=5555), now=1.0)
    ((key, stats),) = flows.top(limit=5)
    assert key == ("10.0.0.1", 9, "10.0.1.1", 5555, "TCP")
    assert (stats.bytes, stats.resets_sent) == (0, 1)


def test_report_rows_carry_health_only_for_tcp_with_the_probe_on() -> None:
    flows = SessionFlows()
    flows.add(observation=Flow("10.0.0.1", "10.0.1.1", 5353, 53, 17, "ingress", 3, 80, 1, 0, 0,
                               0), now=1.0)  # fmt: skip
    flows.add_tcp(health=_health(retransmits=2), now=1.0)

    def entry(tcp_health: bool) -> dict[str, dict[str, object]]:
        e = trace_node_entry(node="n", state="Running", probes=["flows", "tcp"], message="",
                             now=2.0, flows=flows, top_flows=5, alerts=None, max_alerts=0,
                             pods_by_ip={}, dropped_events=0, tcp_health=tcp_health)  # fmt: skip
        assert e.retransmits == 2
        return {r.protocol: r.model_dump(by_alias=True, exclude_none=True) for r in e.flows}

    on = entry(True)
    assert on["TCP"]["retransmits"] == 2 and "connectLatencyMs" not in on["TCP"]
    assert "retransmits" not in on["UDP"]
    assert "retransmits" not in entry(False)["TCP"]


def test_router_sends_a_pods_sockets_to_sessions_that_want_tcp_health() -> None:
    wants = _served("s1", {})
    udp_only = _served("s2", {"protocols": ["UDP"]})
    opted_out = _served("s3", {"tcpHealth": False})
    router = TcpHealthRouter(sessions=[wants, udp_only, opted_out],
                             pod_by_netns={7: "pod-a", 8: "pod-h", 9: "pod-x"})  # fmt: skip
    assert [s.uid for s in router.route(health=_health())] == ["s1"]
    assert router.route(health=_health(netns=99)) == []
    assert router.route(health=_health(netns=8)) == []  # hostNetwork: the node's namespace
    assert router.watched_netns == frozenset({7})
