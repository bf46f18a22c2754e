"""A filtered TraceSession end to end: spec.probes.network.filter → operator →
agent → kernel filter on the pod's veth → only the asked-for flows in status.

Real apiserver, real kernel, the operator and an agent as separate processes,
pods backed by netns/veth/cgroups (a simulated node).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet
from tests.e2e.conftest import tcp_transfer, wait_for
from tests.e2e.test_trace_session import SHOP, apply_session, running_on, status


def test_only_the_filtered_port_reaches_the_status(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name="node-a")
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    server = kubelet.run_pod(namespace=namespace, name="server", node="node-a")
    agent = start_agent("node-a")
    # the client's traffic to the server's port 8081 only; the server is not a target
    apply_session(
        control_plane, namespace, "port-8081",
        probes={"network": {"enabled": True, "tcpHealth": False, "filter": {"ports": [8081]}}},
    )  # fmt: skip
    wait_for(lambda: running_on(control_plane, namespace, "port-8081", {"node-a"}),
             timeout=90, what="the session Running on node-a")  # fmt: skip

    taken = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8081)
    left_out = tcp_transfer(client=client, server=server, nbytes=3_000_000, port=8082)
    assert (taken.received, left_out.received) == (2_000_000, 3_000_000)

    def to_8081() -> dict[str, Any] | None:
        for flow in status(control_plane, namespace, "port-8081").get("flows") or []:
            if flow["destination"].get("port") == 8081 and flow["bytes"] >= taken.wire_bytes * 0.99:
                return dict(flow)
        return None

    flow = wait_for(to_8081, timeout=45, what="client→server:8081 in status.flows")
    # the client's veth carried exactly this from the pod during the 8081 transfer
    assert flow["bytes"] == pytest.approx(taken.wire_bytes, rel=0.01), flow
    assert flow["source"]["pod"] == "client" and flow["destination"]["ip"] == server.ip
    # a later report cannot bring 8082 in: reports are cumulative, so read one after
    # the 8082 transfer had time to be drained (the agent reports every second)
    first = status(control_plane, namespace, "port-8081")["nodes"][0]["lastReportTime"]
    wait_for(
        lambda: status(control_plane, namespace, "port-8081")["nodes"][0]["lastReportTime"]
        > first, timeout=30, what="a report after the transfers",
    )  # fmt: skip
    final = status(control_plane, namespace, "port-8081")
    ports = [(f["source"].get("port"), f["destination"].get("port")) for f in final["flows"]]
    assert ports and all(8081 in pair for pair in ports), ports
    # the 3 MB to 8082 is in no total either (the 8081 rows are all that was counted)
    assert final["summary"]["bytes"] == sum(f["bytes"] for f in final["flows"])
    assert final["summary"]["bytes"] < taken.wire_bytes + left_out.wire_bytes / 2
    # and it was the kernel that kept 8082 out: the packets never reached a flow map
    # (a segment carries at most 64 KiB, so the 3 MB took at least this many)
    assert filtered_packets(agent) >= left_out.wire_bytes // 65536 > 0
    assert agent.proc.poll() is None, agent.logs()


def filtered_packets(agent: Any) -> float:
    url = f"http://127.0.0.1:{agent.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "orb8_flow_filtered_packets":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("orb8_flow_filtered_packets_total is not exported")
