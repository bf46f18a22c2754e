"""Flow routing, dedupe, alert aggregation and the node status entry."""

from __future__ import annotations

from collections.abc import Mapping

from orb8_agent.control.alerts import ContainerRef, SessionAlerts
from orb8_agent.control.flows import FlowRouter, SessionFlows
from orb8_agent.control.report import PodName, trace_node_entry
from orb8_agent.control.served import Served, container_ids
from orb8_agent.dataplane.models import Alert, Flow
from orb8_common.models import (
    DANGEROUS_SYSCALLS,
    NodeAgentConfigSpec,
    NodeEntry,
    parse_trace_session_spec,
)

PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1}


def Obs(
    src_ip: str, dst_ip: str, src_port: int, dst_port: int, protocol: str, direction: str,
    ifindex: int, nbytes: int, packets: int,
) -> Flow:  # fmt: skip
    return Flow(src_ip, dst_ip, src_port, dst_port, PROTOCOLS[protocol], direction, ifindex,
                nbytes, packets, 0, 0, 0)  # fmt: skip


def Event(tgid: int, comm: str, cgroup_id: int, syscall: str) -> Alert:
    return Alert(tgid + 1000, tgid, comm, cgroup_id, 0, syscall, 0, 0.0)


def _pod(uid: str, name: str, ip: str) -> dict[str, object]:
    return {
        "uid": uid, "namespace": "shop", "name": name, "ips": [ip],
        "containers": [{"name": "app", "id": f"containerd://{uid * 8}"}],
    }  # fmt: skip


# What NodeAgentConfig/node-a lists (who and which pods), and the sessions' own specs.
SPEC = {
    "nodeName": "node-a",
    "sessions": [
        {
            "uid": "s1", "kind": "TraceSession", "namespace": "shop", "name": "both",
            "pods": [_pod("aaaa", "client", "10.0.0.1"), _pod("bbbb", "server", "10.0.0.2")],
        },
        {
            "uid": "s2", "kind": "TraceSession", "namespace": "shop", "name": "server-udp",
            "pods": [_pod("bbbb", "server", "10.0.0.2")],
        },
    ],
}  # fmt: skip
SETTINGS = {
    "s1": {
        "reportInterval": "5s",
        "probes": {"network": {"enabled": True, "topFlows": 2},
                   "syscalls": {"enabled": True, "alertOn": ["ptrace", "mount"],
                                "learningPeriod": "10s", "maxAlerts": 2}},
    },
    "s2": {
        "probes": {"network": {"enabled": True, "protocols": ["UDP"], "directions": ["ingress"]},
                   "syscalls": {"enabled": False}},
    },
}  # fmt: skip
IFINDEX = {11: "aaaa", 12: "bbbb"}


def sessions_from_spec(*, spec: Mapping[str, object]) -> list[Served]:
    """Served sessions the way the agent builds them: both halves parsed by the models."""
    config = NodeAgentConfigSpec.model_validate(spec)
    return [
        Served(session=s, spec=parse_trace_session_spec(SETTINGS[s.uid])) for s in config.sessions
    ]


def test_spec_parsing_applies_the_models_defaults_and_strips_runtime_prefixes() -> None:
    both, udp = sessions_from_spec(spec=SPEC)
    assert both.report_interval_s == 5.0
    assert udp.report_interval_s == 15.0
    assert both.network is not None
    assert set(both.network.protocols) == {"TCP", "UDP", "ICMP", "ICMPv6"}
    assert both.syscalls is not None and both.syscalls.learning_period_seconds == 10.0
    assert udp.syscalls is None
    assert container_ids(pod=both.pods[0]) == [("app", "aaaa" * 8)]


def test_alert_list_default_is_the_models_danger_list() -> None:
    """The agent acts on the models' defaults (one contract): no alertOn → the danger list."""
    spec = parse_trace_session_spec({"probes": {"syscalls": {"enabled": True}}})
    served = Served(session=NodeAgentConfigSpec.model_validate(SPEC).sessions[0], spec=spec)
    assert served.syscalls is not None
    assert served.syscalls.alert_on == DANGEROUS_SYSCALLS


def test_same_node_pod_to_pod_traffic_is_counted_once() -> None:
    both, udp = sessions_from_spec(spec=SPEC)
    router = FlowRouter(sessions=[both, udp], pod_by_ifindex=IFINDEX)
    sent = Obs("10.0.0.1", "10.0.0.2", 40000, 80, "TCP", "ingress", 11, 1000, 10)
    received = Obs("10.0.0.1", "10.0.0.2", 40000, 80, "TCP", "egress", 12, 1000, 10)
    assert router.route(observation=sent) == [both]
    assert router.route(observation=received) == []  # already counted at the client's veth


def test_protocol_and_direction_filters_select_sessions() -> None:
    both, udp = sessions_from_spec(spec=SPEC)
    router = FlowRouter(sessions=[both, udp], pod_by_ifindex=IFINDEX)
    from_outside = Obs("192.0.2.9", "10.0.0.2", 5353, 53, "UDP", "egress", 12, 80, 1)
    server_reply = Obs("10.0.0.2", "192.0.2.9", 53, 5353, "UDP", "ingress", 12, 120, 1)
    unknown_interface = Obs("10.0.0.2", "192.0.2.9", 53, 5353, "UDP", "ingress", 99, 120, 1)
    assert router.route(observation=from_outside) == [both, udp]
    assert router.route(observation=server_reply) == [both]  # s2 counts only ingress
    assert router.route(observation=unknown_interface) == []


def test_flows_accumulate_and_rank_by_bytes_within_the_cap() -> None:
    flows = SessionFlows(max_tracked=2)
    flows.add(observation=Obs("10.0.0.1", "10.0.0.2", 1, 80, "TCP", "ingress", 11, 100, 1), now=1)
    flows.add(observation=Obs("10.0.0.1", "10.0.0.2", 1, 80, "TCP", "ingress", 11, 900, 3), now=2)
    flows.add(observation=Obs("10.0.0.1", "10.0.0.3", 2, 53, "UDP", "ingress", 11, 50, 1), now=3)
    flows.add(observation=Obs("10.0.0.1", "10.0.0.4", 3, 53, "UDP", "ingress", 11, 70, 1), now=4)
    assert (flows.bytes, flows.packets, flows.flow_count) == (1120, 6, 3)
    (top_key, top_stats), second = flows.top(limit=5)
    assert top_key == ("10.0.0.1", 1, "10.0.0.2", 80, "TCP")
    assert (top_stats.bytes, top_stats.packets, top_stats.first_seen, top_stats.last_seen) == (
        1000, 4, 1, 2,
    )  # fmt: skip
    assert second[0][2] == "10.0.0.3"


def test_alerts_respect_learning_period_alert_list_and_cap() -> None:
    alerts = SessionAlerts(alert_on=frozenset({"ptrace", "mount", "bpf"}), learning_until=10.0,
                           max_alerts=2)  # fmt: skip
    app = ContainerRef("shop", "client", "aaaa", "app")
    alerts.add(ref=app, event=Event(1, "init", 7, "mount"), now=5.0)  # learned as normal
    alerts.add(ref=app, event=Event(2, "gdb", 7, "ptrace"), now=11.0)
    alerts.add(ref=app, event=Event(3, "gdb", 7, "ptrace"), now=12.0)
    alerts.add(ref=app, event=Event(4, "mount", 7, "mount"), now=13.0)  # baseline: no alert
    alerts.add(ref=app, event=Event(5, "x", 7, "kill"), now=13.0)  # not on the list
    alerts.add(ref=app, event=Event(6, "bpftool", 7, "bpf"), now=14.0)
    alerts.add(ref=ContainerRef("shop", "server", "bbbb", "app"), event=Event(7, "y", 8, "bpf"),
               now=15.0)  # fmt: skip
    rows = alerts.rows()
    assert [(r.syscall, r.count, r.pid, r.comm) for r in rows] == [
        ("ptrace", 2, 3, "gdb"), ("bpf", 1, 6, "bpftool"),
    ]  # fmt: skip
    assert alerts.count == 3
    assert alerts.suppressed == 1


def test_node_entry_names_both_ends_and_stays_bounded() -> None:
    flows = SessionFlows()
    for port in range(5):
        flows.add(
            observation=Obs("10.0.0.1", "10.0.0.2", 40000 + port, 80, "TCP", "ingress", 11,
                            100 * (port + 1), 1),
            now=1700000000.0,
        )  # fmt: skip
    flows.add(observation=Obs("10.0.0.1", "10.0.0.2", 0, 0, "ICMP", "ingress", 11, 84, 1),
              now=1700000000.0)  # fmt: skip
    entry = trace_node_entry(
        node="node-a", state="Running", probes=["syscalls", "flows"], message="",
        now=1700000005.0, flows=flows, top_flows=2, alerts=None, max_alerts=0,
        pods_by_ip={"10.0.0.1": PodName("shop", "client"), "10.0.0.2": PodName("shop", "server")},
        dropped_events=0,
    ).model_dump(mode="json", by_alias=True, exclude_none=True)  # fmt: skip
    assert entry["probes"] == ["flows", "syscalls"]
    assert entry["flowCount"] == 6
    assert entry["bytes"] == 1584
    assert entry["lastReportTime"] == "2023-11-14T22:13:25Z"
    assert len(entry["flows"]) == 2
    top = entry["flows"][0]
    assert top["source"] == {"ip": "10.0.0.1", "port": 40004, "namespace": "shop", "pod": "client"}
    assert top["destination"] == {
        "ip": "10.0.0.2",
        "port": 80,
        "namespace": "shop",
        "pod": "server",
    }
    assert top["bytes"] == 500 and top["node"] == "node-a"
    assert entry["alerts"] == [] and entry["alertCount"] == 0


def test_restored_totals_continue_without_counting_listed_flows_twice() -> None:
    """After a restart the agent continues from its last report: totals add, flows dedupe."""
    flows = SessionFlows()
    flows.add(observation=Obs("10.0.0.1", "10.0.0.2", 1, 80, "TCP", "ingress", 11, 300, 3), now=1)
    flows.add(observation=Obs("10.0.0.1", "10.0.0.3", 2, 80, "TCP", "ingress", 11, 100, 1), now=1)
    before = trace_node_entry(
        node="node-a", state="Running", probes=["flows"], message="", now=2.0, flows=flows,
        top_flows=1, alerts=None, max_alerts=0, pods_by_ip={}, dropped_events=0,
    )  # fmt: skip
    wire = before.model_dump(mode="json", by_alias=True, exclude_none=True)
    restored = SessionFlows()
    earlier = NodeEntry.model_validate(wire)
    restored.restore(
        bytes_=earlier.bytes, packets=earlier.packets, flow_count=earlier.flow_count,
        rows=earlier.flows,
    )  # fmt: skip
    assert (restored.bytes, restored.packets, restored.flow_count) == (400, 4, 2)
    # The listed flow seen again: bytes add, the flow is not new.
    restored.add(observation=Obs("10.0.0.1", "10.0.0.2", 1, 80, "TCP", "ingress", 11, 50, 1), now=3)
    assert (restored.bytes, restored.packets, restored.flow_count) == (450, 5, 2)
    ((key, stats),) = restored.top(limit=1)
    assert key == ("10.0.0.1", 1, "10.0.0.2", 80, "TCP") and stats.bytes == 350


def test_restored_alerts_keep_their_counts() -> None:
    alerts = SessionAlerts(alert_on=frozenset({"ptrace"}), learning_until=0.0, max_alerts=5)
    app = ContainerRef("shop", "client", "aaaa", "app")
    for pid in range(3):
        alerts.add(ref=app, event=Event(pid, "gdb", 7, "ptrace"), now=1.0)
    entry = trace_node_entry(
        node="node-a", state="Running", probes=["syscalls"], message="", now=2.0, flows=None,
        top_flows=0, alerts=alerts, max_alerts=5, pods_by_ip={}, dropped_events=0,
    )  # fmt: skip
    again = SessionAlerts(alert_on=frozenset({"ptrace"}), learning_until=0.0, max_alerts=5)
    again.restore(alert_count=entry.alert_count, rows=entry.alerts)
    again.add(ref=app, event=Event(9, "gdb", 7, "ptrace"), now=3.0)
    assert again.count == 4
    assert [(r.syscall, r.count) for r in again.rows()] == [("ptrace", 4)]
