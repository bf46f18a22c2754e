"""Session lifecycle end to end: pods coming and going, duration, concurrency, overlap."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from typing import Any

from kubernetes_asyncio import client, config

from orb8_agent.control.kube import patch_agent_status
from orb8_common.models import NodeAgentConfigSpec, format_epoch
from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet
from tests.e2e.conftest import get_json, tcp_transfer, wait_for
from tests.e2e.test_trace_session import SHOP, apply_session, flow_between, running_on, status


def _config_pods(plane: ControlPlane, node: str) -> set[str]:
    result = plane.kubectl("get", "nac", node, "-o", "json", check=False)
    if result.returncode != 0:
        return set()
    spec = NodeAgentConfigSpec.model_validate(json.loads(result.stdout)["spec"])
    return {pod.name for session in spec.sessions for pod in session.pods}


def test_pods_that_leave_drop_out_and_new_ones_are_picked_up(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name="node-a")
    client_pod = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    old = kubelet.run_pod(namespace=namespace, name="old-server", node="node-a", labels=SHOP)
    start_agent("node-a")
    apply_session(control_plane, namespace, "churn")
    wait_for(lambda: running_on(control_plane, namespace, "churn", {"node-a"}), timeout=60,
             what="session running")  # fmt: skip
    assert _config_pods(control_plane, "node-a") == {"client", "old-server"}

    kubelet.delete_pod(old)
    wait_for(lambda: _config_pods(control_plane, "node-a") == {"client"}, timeout=45,
             what="the deleted pod gone from the node's config")  # fmt: skip
    wait_for(lambda: status(control_plane, namespace, "churn").get("matchedPods") == 1,
             timeout=45, what="matchedPods down to 1")  # fmt: skip

    new = kubelet.run_pod(namespace=namespace, name="new-server", node="node-a", labels=SHOP)
    wait_for(lambda: _config_pods(control_plane, "node-a") == {"client", "new-server"},
             timeout=30, what="the new pod in the node's config")  # fmt: skip
    sent = 1_000_000
    transfer = tcp_transfer(client=client_pod, server=new, nbytes=sent)
    assert transfer.received == sent
    flow = wait_for(lambda: flow_between(control_plane, namespace, "churn", client_pod, new,
                                         transfer),
                    timeout=30, what="a flow to the new pod")  # fmt: skip
    assert flow["destination"]["pod"] == "new-server"

    control_plane.kubectl("label", "pod", "new-server", "-n", namespace, "app-", "--overwrite")
    wait_for(lambda: _config_pods(control_plane, "node-a") == {"client"}, timeout=45,
             what="a pod whose labels stop matching dropped")  # fmt: skip


def test_pod_changes_reach_node_configs_without_any_timer(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, start_operator: Any
) -> None:
    """With every periodic resync ten minutes away, only the pod watch can carry a new pod."""
    start_operator("--session-resync", "600", "--node-config-resync", "600")
    kubelet.add_node(name="node-a")
    kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    apply_session(control_plane, namespace, "watch-only")
    wait_for(lambda: _config_pods(control_plane, "node-a") == {"client"}, timeout=60,
             what="the session's first node config")  # fmt: skip
    kubelet.run_pod(namespace=namespace, name="late", node="node-a", labels=SHOP)
    wait_for(lambda: _config_pods(control_plane, "node-a") == {"client", "late"}, timeout=60,
             what="the new pod in the node's config, carried by the pod watch")  # fmt: skip
    # The one resync loop follows the same change into the session's status.
    wait_for(lambda: status(control_plane, namespace, "watch-only").get("matchedPods") == 2,
             timeout=30, what="matchedPods following the pod watch")  # fmt: skip


def test_duration_completes_the_session_and_kubectl_wait_returns(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name="node-a")
    kubelet.run_pod(namespace=namespace, name="app", node="node-a", labels=SHOP)
    start_agent("node-a")
    apply_session(control_plane, namespace, "short", duration="6s")
    waited = control_plane.kubectl(
        "wait", "ts/short", "-n", namespace, "--for=condition=Complete", "--timeout=60s",
        timeout=90,
    )  # fmt: skip
    assert "condition met" in waited.stdout
    st = status(control_plane, namespace, "short")
    assert st["phase"] == "Completed"
    assert st["completionTime"] >= st["startTime"]
    wait_for(lambda: not _config_pods(control_plane, "node-a"), timeout=45,
             what="the completed session removed from the node's config")  # fmt: skip
    wait_for(
        lambda: [n["state"] for n in status(control_plane, namespace, "short").get("nodes") or []]
        == ["Stopped"],
        timeout=45, what="the node's last report marked Stopped",
    )  # fmt: skip
    events = get_json(control_plane, "events", "-n", namespace,
                      "--field-selector", "involvedObject.name=short")  # fmt: skip
    reasons = {event["reason"] for event in events["items"]}
    assert "Completed" in reasons, reasons


def test_ten_agents_reports_merge_into_one_status_losing_nothing(
    control_plane: ControlPlane, namespace: str, operator: Any
) -> None:
    """Ten agents each write their own NodeAgentConfig's status; the operator merges all ten
    into the session, round after round, and no node's report is lost or mixed up."""
    apply_session(control_plane, namespace, "crowd")
    uid = get_json(control_plane, "ts", "crowd", "-n", namespace)["metadata"]["uid"]
    nodes = [f"{namespace}-n{i}" for i in range(10)]
    for node in nodes:  # not the operator's (no managed-by label): it leaves them alone
        control_plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "orb8.io/v1alpha1", "kind": "NodeAgentConfig",
            "metadata": {"name": node}, "spec": {"nodeName": node},
        }))  # fmt: skip

    async def write_all(round_: int) -> None:
        await config.load_kube_config(config_file=str(control_plane.kubeconfig))
        async with client.ApiClient() as api_client:
            api = client.CustomObjectsApi(api_client)
            await asyncio.gather(*(
                patch_agent_status(api=api, node=node, status={"reports": [{
                    "uid": uid, "kind": "TraceSession", "namespace": namespace, "name": "crowd",
                    "trace": {"node": node, "state": "Running", "message": f"round {round_}",
                              "lastReportTime": format_epoch(time.time()), "flowCount": round_,
                              "bytes": 1000 * round_, "packets": round_, "probes": ["flows"]},
                }]})
                for node in nodes
            ))  # fmt: skip

    try:
        for round_ in range(1, 4):
            asyncio.run(write_all(round_))

            def merged(round_: int = round_) -> list[dict[str, Any]] | None:
                entries = [e for e in status(control_plane, namespace, "crowd").get("nodes") or []
                           if e["node"] in nodes]  # fmt: skip
                done = {e["message"] for e in entries} == {f"round {round_}"}
                return entries if len(entries) == len(nodes) and done else None

            entries = wait_for(merged, timeout=30, what=f"round {round_} merged from all nodes")
            assert {e["bytes"] for e in entries} == {1000 * round_}
            assert status(control_plane, namespace, "crowd")["summary"]["bytes"] == 10_000 * round_
    finally:
        control_plane.kubectl("delete", "nac", *nodes, check=False)


def test_overlapping_sessions_get_independent_results(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name="node-a")
    client_pod = kubelet.run_pod(namespace=namespace, name="client", node="node-a",
                                 labels={**SHOP, "role": "client"})  # fmt: skip
    server = kubelet.run_pod(namespace=namespace, name="server", node="node-a", labels=SHOP)
    start_agent("node-a")
    apply_session(control_plane, namespace, "everything")
    apply_session(
        control_plane, namespace, "udp-only",
        selector={"podSelector": {"matchLabels": {"role": "client"}}},
        probes={"network": {"enabled": True, "protocols": ["UDP"]}},
    )  # fmt: skip
    for name in ("everything", "udp-only"):
        wait_for(partial(running_on, control_plane, namespace, name, {"node-a"}), timeout=60,
                 what=f"{name} running")  # fmt: skip
    sent = 1_500_000
    transfer = tcp_transfer(client=client_pod, server=server, nbytes=sent)
    assert transfer.received == sent
    wait_for(lambda: flow_between(control_plane, namespace, "everything", client_pod, server,
                                  transfer),
             timeout=30, what="the TCP flow in the session that counts TCP")  # fmt: skip
    udp_only = status(control_plane, namespace, "udp-only")
    assert udp_only["matchedPods"] == 1
    assert all(flow["protocol"] == "UDP" for flow in udp_only.get("flows") or [])
    assert not udp_only.get("alerts")
    everything = status(control_plane, namespace, "everything")
    assert everything["matchedPods"] == 2
