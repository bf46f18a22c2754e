"""The whole loop: TraceSession → operator → NodeAgentConfig → agents → status.

Real apiserver, real kernel, the operator and one agent per simulated node
as separate processes, pods backed by netns/veth/cgroups.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from typing import Any

import pytest

from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.traffic_ctl import tc_filters
from tests.e2e.conftest import Transfer, get_json, make_victim, tcp_transfer, wait_for

SHOP = {"app": "shop"}


def apply_session(plane: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": SHOP}},
            "probes": {"network": {"enabled": True},
                       "syscalls": {"enabled": True, "alertOn": ["ptrace", "mount"]}},
            "reportInterval": "1s",
            **spec,
        },
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(body))


def status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get_json(plane, "ts", name, "-n", namespace).get("status") or {}
    return found


def flow_between(
    plane: ControlPlane, namespace: str, name: str, src: SimPod, dst: SimPod, transfer: Transfer
) -> dict[str, Any] | None:
    """The src→dst flow in the session's status, once it holds (nearly) all the wire bytes."""
    for flow in status(plane, namespace, name).get("flows") or []:
        ends = (flow["source"].get("pod"), flow["destination"].get("pod"))
        if ends == (src.name, dst.name) and flow["bytes"] >= transfer.wire_bytes * 0.99:
            return dict(flow)
    return None


def running_on(plane: ControlPlane, namespace: str, name: str, nodes: set[str]) -> bool:
    """The session is Running and every one of ``nodes`` reports Running."""
    st = status(plane, namespace, name)
    reporting = {e["node"] for e in st.get("nodes") or [] if e.get("state") == "Running"}
    return st.get("phase") == "Running" and reporting >= nodes


def test_flows_and_alerts_reach_the_session_status(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    for node in ("node-a", "node-b"):
        kubelet.add_node(name=node)
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    local = kubelet.run_pod(namespace=namespace, name="local-server", node="node-a", labels=SHOP)
    remote = kubelet.run_pod(namespace=namespace, name="remote-server", node="node-b", labels=SHOP)
    outsider = kubelet.run_pod(namespace=namespace, name="outsider", node="node-a")
    agents = [start_agent("node-a"), start_agent("node-b")]
    apply_session(control_plane, namespace, "shop-debug")

    wait_for(lambda: running_on(control_plane, namespace, "shop-debug", {"node-a", "node-b"}),
             timeout=90, what="the session Running on both nodes")  # fmt: skip
    st = status(control_plane, namespace, "shop-debug")
    assert st["phase"] == "Running"
    assert st["matchedPods"] == 3

    same_node, cross_node = 2_000_000, 3_000_000
    to_local = tcp_transfer(client=client, server=local, nbytes=same_node, port=8081)
    to_remote = tcp_transfer(client=client, server=remote, nbytes=cross_node, port=8082)
    assert (to_local.received, to_remote.received) == (same_node, cross_node)
    victim = make_victim(client)
    make_victim(outsider)

    for server, sent, transfer in ((local, same_node, to_local), (remote, cross_node, to_remote)):
        flow = wait_for(
            partial(flow_between, control_plane, namespace, "shop-debug", client, server, transfer),
            timeout=45, what=f"client→{server.name} in status.flows",
        )  # fmt: skip
        # wire bytes against the client veth's own counter; the payload is a floor
        assert flow["bytes"] == pytest.approx(transfer.wire_bytes, rel=0.01), flow
        assert flow["bytes"] >= sent
        assert flow["source"]["namespace"] == flow["destination"]["namespace"] == namespace
        assert flow["destination"]["ip"] == server.ip

    def client_alerts() -> list[dict[str, Any]]:
        alerts = status(control_plane, namespace, "shop-debug").get("alerts") or []
        return [a for a in alerts if a["pod"] == "client" and a["process"]["pid"] == victim]

    alerts = wait_for(lambda: len(client_alerts()) == 2 and client_alerts(), timeout=30,
                      what="ptrace and mount alerts naming the client pod")  # fmt: skip
    assert {a["syscall"] for a in alerts} == {"ptrace", "mount"}
    assert all(a["node"] == "node-a" and a["container"] == "app" for a in alerts)
    final = status(control_plane, namespace, "shop-debug")
    assert not [a for a in final["alerts"] if a["pod"] == "outsider"]
    assert final["summary"]["alerts"] >= 2
    assert final["summary"]["nodes"] == 2

    table = control_plane.kubectl("get", "ts", "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME", "PHASE", "PODS", "NODES", "FLOWS", "BYTES", "ALERTS", "RETRANS", "DNS-ERRORS",
        "AGE",
    ]  # fmt: skip
    row = table[1].split()
    assert row[:4] == ["shop-debug", "Running", "3", "2"]
    assert int(row[5]) >= same_node + cross_node

    cli = subprocess.run(
        [sys.executable, "-m", "orb8_cli.main", "get", "flows", "shop-debug", "-n", namespace],
        capture_output=True, text=True, env=control_plane.env(), timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"{namespace}/client:" in cli.stdout and f"{namespace}/remote-server:8082" in cli.stdout

    uid = get_json(control_plane, "ts", "shop-debug", "-n", namespace)["metadata"]["uid"]
    control_plane.kubectl("delete", "ts", "shop-debug", "-n", namespace, "--timeout=60s")

    def configs_naming_the_session() -> list[str]:
        configs = get_json(control_plane, "nac")["items"]
        return [c["metadata"]["name"] for c in configs
                if any(s["uid"] == uid for s in c["spec"].get("sessions") or [])]  # fmt: skip

    wait_for(lambda: not configs_naming_the_session(), timeout=30,
             what="the session gone from every NodeAgentConfig")  # fmt: skip
    for node in ("node-a", "node-b"):
        leftover = control_plane.kubectl("get", "nac", node, check=False)
        assert leftover.returncode != 0, f"{node} has no target left, so its config must go"
    wait_for(lambda: all("bpf" not in tc_filters(None, p.host_if) for p in (client, local, remote)),
             timeout=30, what="tc filters detached from every pod veth")  # fmt: skip
    for agent in agents:
        assert agent.proc.poll() is None, agent.logs()
