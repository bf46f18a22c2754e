"""The agent alone, against the real apiserver and kernel: NodeAgentConfig in,
its status.reports out.

The NodeAgentConfig is written by the test here (the operator's part is
tested elsewhere), so these tests pin down the agent's side of the contract:
it reads the session's settings from the session itself, and writes one
report per session into its own NodeAgentConfig's status.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orb8_dev import reliability
from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.netns import link_counters
from orb8_dev.traffic_ctl import tc_filters
from tests.e2e.conftest import AgentProcess, make_victim, tcp_transfer, wait_for
from tests.e2e.faults import AGENT_GRACE_S, first_seen, http_status, terminate


def _session(
    plane: ControlPlane, namespace: str, name: str, report_interval: str = "1s"
) -> dict[str, Any]:
    manifest = {
        "apiVersion": "orb8.io/v1alpha1",
        "kind": "TraceSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": {"app": "shop"}}},
            "probes": {
                "network": {"enabled": True, "topFlows": 20},
                "syscalls": {"enabled": True, "alertOn": ["ptrace", "mount"], "maxAlerts": 10},
            },
            "reportInterval": report_interval,
        },
    }
    created: dict[str, Any] = json.loads(
        plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest)).stdout
    )
    return created


def _pod_entry(pod: SimPod) -> dict[str, Any]:
    return {
        "uid": pod.uid, "namespace": pod.namespace, "name": pod.name, "ips": [pod.ip],
        "hostNetwork": False, "containers": [{"name": "app", "id": f"containerd://{pod.container_id}"}],
    }  # fmt: skip


def _node_config(node: str, session: dict[str, Any], pods: list[SimPod]) -> dict[str, Any]:
    meta = session["metadata"]
    return {
        "apiVersion": "orb8.io/v1alpha1",
        "kind": "NodeAgentConfig",
        "metadata": {"name": node},
        "spec": {
            "nodeName": node,
            "sessions": [
                {
                    "uid": meta["uid"], "kind": "TraceSession", "namespace": meta["namespace"],
                    "name": meta["name"], "generation": meta["generation"],
                    "pods": [_pod_entry(pod) for pod in pods],
                }
            ],
        },
    }  # fmt: skip


def _node_entry(plane: ControlPlane, namespace: str, name: str, node: str) -> dict[str, Any]:
    """The agent's report for session ``name`` in NodeAgentConfig/<node>.status."""
    result = plane.kubectl("get", "nac", node, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    for report in (json.loads(result.stdout).get("status") or {}).get("reports") or []:
        if (report["namespace"], report["name"]) == (namespace, name):
            return dict(report.get("trace") or {})
    return {}


def test_agent_reports_flows_and_alerts_of_its_targets(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, start_agent: Any
) -> None:
    kubelet.add_node(name="node-a")
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a",
                             labels={"app": "shop"})  # fmt: skip
    server = kubelet.run_pod(namespace=namespace, name="server", node="node-a",
                             labels={"app": "shop"})  # fmt: skip
    outsider = kubelet.run_pod(namespace=namespace, name="outsider", node="node-a")
    session = _session(control_plane, namespace, "agent-only")
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(_node_config("node-a", session, [client, server]))
    )
    agent: AgentProcess = start_agent("node-a")
    wait_for(lambda: _node_entry(control_plane, namespace, "agent-only", "node-a").get("state")
             == "Running", timeout=60, what="the agent's first Running report")  # fmt: skip

    sent = 3_000_000
    transfer = tcp_transfer(client=client, server=server, nbytes=sent)
    assert transfer.received == sent
    victim_pid = make_victim(client)
    make_victim(outsider)

    def client_to_server() -> dict[str, Any] | None:
        entry = _node_entry(control_plane, namespace, "agent-only", "node-a")
        for flow in entry.get("flows") or []:
            ends = (flow["source"].get("pod"), flow["destination"].get("pod"))
            if ends == ("client", "server") and flow["bytes"] >= transfer.wire_bytes * 0.99:
                return dict(flow)
        return None

    flow = wait_for(client_to_server, timeout=30, what="client→server flow with all bytes")
    assert flow["protocol"] == "TCP"
    assert flow["destination"]["port"] == 8080
    assert flow["source"]["namespace"] == flow["destination"]["namespace"] == namespace
    # wire bytes against the veth's own counter; the payload is a floor
    assert flow["bytes"] == pytest.approx(transfer.wire_bytes, rel=0.01), flow
    assert flow["bytes"] >= sent
    assert flow["node"] == "node-a"

    def victim_alerts() -> list[dict[str, Any]]:
        entry = _node_entry(control_plane, namespace, "agent-only", "node-a")
        return [a for a in entry.get("alerts") or [] if a["process"]["pid"] == victim_pid]

    alerts = wait_for(lambda: len(victim_alerts()) == 2 and victim_alerts(), timeout=30,
                      what="ptrace and mount alerts from the client pod")  # fmt: skip
    assert {a["syscall"] for a in alerts} == {"ptrace", "mount"}
    for alert in alerts:
        assert (alert["namespace"], alert["pod"], alert["container"]) == (
            namespace,
            "client",
            "app",
        )
        assert alert["process"]["comm"] == "orb8-victim"
        assert alert["severity"] == "High"
    entry = _node_entry(control_plane, namespace, "agent-only", "node-a")
    assert all(a["pod"] != "outsider" for a in entry["alerts"])
    assert entry["probes"] == ["flows", "syscalls", "tcp"]

    with urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    client_egress = [
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "orb8_flow_bytes_total"
        and s.labels == {"namespace": namespace, "pod": "client", "direction": "egress",
                         "protocol": "TCP"}
    ]  # fmt: skip
    assert client_egress and client_egress[0] >= transfer.wire_bytes * 0.99
    assert "orb8_attached_interfaces 2.0" in metrics

    assert agent.stop() == 0, agent.logs()
    entry = _node_entry(control_plane, namespace, "agent-only", "node-a")
    assert entry["state"] == "Stopped"
    for pod in (client, server):
        assert "bpf" not in tc_filters(None, pod.host_if)
    control_plane.kubectl("delete", "nac", "node-a")


def _pod_egress_bytes(pods: list[SimPod]) -> int:
    """What the pods sent, by their host veths' own counters: the flow probe's measure."""
    return sum(link_counters(netns=None, interface=p.host_if)["rx_bytes"] for p in pods)


def test_totals_continue_across_an_agent_sigkill(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, start_agent: Any
) -> None:
    """SIGKILL the agent mid-session: after a restart every total continues, nothing lost
    (neither what it had not reported yet nor what crossed the veths while it was dead)
    and nothing counted twice."""
    node = "node-restart"
    kubelet.add_node(name=node)
    shop = {"app": "shop"}
    client = kubelet.run_pod(namespace=namespace, name="client", node=node, labels=shop)
    server = kubelet.run_pod(namespace=namespace, name="server", node=node, labels=shop)
    session = _session(control_plane, namespace, "restart", report_interval="4s")
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps(_node_config(node, session, [client, server]))
    )
    pods = [client, server]
    agent: AgentProcess = start_agent(node)
    wait_for(lambda: _node_entry(control_plane, namespace, "restart", node).get("state")
             == "Running", timeout=60, what="the agent's first Running report")  # fmt: skip
    start = _pod_egress_bytes(pods)

    def reported(at_least: int) -> dict[str, Any] | None:
        entry = _node_entry(control_plane, namespace, "restart", node)
        return entry if entry.get("bytes", 0) >= at_least else None

    # 1. Traffic and two alerts, reported.
    assert tcp_transfer(client=client, server=server, nbytes=2_000_000).received == 2_000_000
    make_victim(client)
    first_oracle = _pod_egress_bytes(pods) - start
    wait_for(lambda: reported(int(first_oracle * 0.99)), timeout=30, what="the first report")
    wait_for(lambda: _node_entry(control_plane, namespace, "restart", node).get("alertCount")
             == 2, timeout=30, what="two alerts reported")  # fmt: skip
    before = _node_entry(control_plane, namespace, "restart", node)

    # 2. Traffic the agent has not reported yet when it is killed.
    tcp_transfer(client=client, server=server, nbytes=2_000_000)
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=10)
    # 3. Traffic while no agent runs (the filters and the pinned map outlive it).
    tcp_transfer(client=client, server=server, nbytes=2_000_000)
    oracle = _pod_egress_bytes(pods) - start

    again: AgentProcess = start_agent(node)
    restarted = time.monotonic()
    # Polled together, so each is timed when it first holds: the restarted agent ready
    # (its watch synced), then the report with every byte.
    seen = first_seen({
        "/readyz true once the restarted agent has synced":
            lambda: http_status(again.http_port, "/readyz") == 200,
        "a report with every byte sent": lambda: reported(int(oracle * 0.99)),
    }, timeout=60)  # fmt: skip
    ready_at = seen["/readyz true once the restarted agent has synced"].at
    resumed = seen["a report with every byte sent"]
    resumed_s = resumed.at - restarted
    final = resumed.value
    assert final["bytes"] >= before["bytes"]
    # Never double: three equal transfers, so one counted twice would be 33% over.
    assert final["bytes"] == pytest.approx(oracle, rel=0.01), (final["bytes"], oracle)
    assert final["packets"] > before["packets"]
    assert final["flowCount"] >= before["flowCount"]
    # Alerts continue from the last report: two more make four, not two.
    make_victim(client)
    wait_for(lambda: _node_entry(control_plane, namespace, "restart", node).get("alertCount")
             == 4, timeout=30, what="alert count continued to 4")  # fmt: skip
    exited = terminate(again.proc, grace_s=AGENT_GRACE_S)
    assert exited is not None and again.proc.returncode == 0, again.logs()[-3000:]
    reliability.record(
        fault="agent SIGKILL mid-session, traffic while it is dead, restarted",
        asserted="bytes equal the veth counters within 1% (nothing lost from the pinned map, "
        "nothing doubled), packets/flowCount/alertCount continue, restarted agent /readyz "
        f"200, SIGTERM exit in {exited:.1f} s",
        recovery_s=resumed_s,
        ready_s=resumed.at - ready_at,
    )
    control_plane.kubectl("delete", "nac", node)
