"""The agent alone, against the real apiserver and kernel: NodeAgentConfig in, status out.

The NodeAgentConfig is written by the test here (the operator's part is
tested elsewhere), so these tests pin down the agent's side of the contract.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.traffic_ctl import tc_filters
from tests.e2e.conftest import AgentProcess, get_json, make_victim, tcp_transfer, wait_for


def _session(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    manifest = {
        "apiVersion": "orb8.io/v1alpha1",
        "kind": "TraceSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": {"app": "shop"}}},
            "probes": {"network": {"enabled": True}, "syscalls": {"enabled": True}},
            "reportInterval": "1s",
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
                    "name": meta["name"], "generation": meta["generation"], "reportInterval": "1s",
                    "probes": {
                        "network": {"enabled": True, "topFlows": 20},
                        "syscalls": {"enabled": True, "alertOn": ["ptrace", "mount"],
                                     "maxAlerts": 10},
                    },
                    "pods": [_pod_entry(pod) for pod in pods],
                }
            ],
        },
    }  # fmt: skip


def _node_entry(plane: ControlPlane, namespace: str, name: str, node: str) -> dict[str, Any]:
    status = get_json(plane, "tracesession", name, "-n", namespace).get("status") or {}
    for entry in status.get("nodes") or []:
        if entry["node"] == node:
            return dict(entry)
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
    assert entry["probes"] == ["flows", "syscalls"]

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
