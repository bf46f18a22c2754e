"""/metrics of a real agent and operator, and the dashboard against what they export.

Agent and operator run as processes against the real apiserver; the pods
are simulated (netns, veth, cgroup), the traffic and the alert-listed
syscalls are real, the GPU sources are the protocol-speaking test servers.
The agent runs with ``--metrics-max-pods 2`` so that the third pod to send
traffic is folded into ``pod="_other"``.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orb8_dev.controlplane import REPO_ROOT, ControlPlane, free_port
from orb8_dev.gpu_servers import (
    Allocation,
    ExporterBehavior,
    FakeGpu,
    KubeletBehavior,
    exposition,
    fake_exporter,
    fake_kubelet,
    gpu_uuid,
)
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.netns import link_counters
from orb8_dev.promql import dashboard_expressions, metric_names
from tests.e2e.conftest import AgentProcess, get_json, make_victim, tcp_transfer, wait_for

NODE = "node-metrics"
DASHBOARD = REPO_ROOT / "charts" / "orb8" / "dashboards" / "orb8.json"
ALLOWED_LABELS = {
    "namespace", "pod", "direction", "protocol", "syscall", "probe", "map", "reason",
    "watch", "target", "result", "group", "gpu", "source", "kind", "le", "state",
}  # fmt: skip
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> tuple[dict[str, str], list[Sample]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    families = list(text_string_to_metric_families(text))
    return {f.name: f.type for f in families}, [s for f in families for s in f.samples]


def _series(samples: list[Sample], name: str) -> Series:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples if s.name == name}


def _total(samples: list[Sample], name: str, **match: str) -> float:
    return sum(
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    )  # fmt: skip


def _apply(plane: ControlPlane, body: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=json.dumps(body))


def _sessions(plane: ControlPlane, namespace: str, exporter_port: int) -> None:
    _apply(plane, {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "shop"}}},
                 "probes": {"network": {"enabled": True},
                            "syscalls": {"enabled": True, "alertOn": ["ptrace", "mount"]}},
                 "reportInterval": "1s"},
    })  # fmt: skip
    _apply(plane, {
        "apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
        "metadata": {"name": "ml", "namespace": namespace},
        "spec": {"selector": {"podSelector": {"matchLabels": {"team": "ml"}}},
                 "source": {"dcgmExporter": {"port": exporter_port}}, "interval": "1s"},
    })  # fmt: skip


def _running(plane: ControlPlane, kind: str, namespace: str, name: str) -> bool:
    status = get_json(plane, kind, name, "-n", namespace).get("status") or {}
    nodes = {e["node"]: e.get("state") for e in status.get("nodes") or []}
    return status.get("phase") == "Running" and nodes.get(NODE) == "Running"


def _veth_bytes(pods: list[SimPod]) -> dict[str, dict[str, int]]:
    return {p.name: link_counters(netns=None, interface=p.host_if) for p in pods}


def test_live_metrics_are_bounded_clean_and_cover_every_dashboard_query(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str,
    start_operator: Callable[..., Any], start_agent: Callable[..., AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    kubelet.add_node(name=NODE)
    shop = {"app": "shop"}
    client = kubelet.run_pod(namespace=namespace, name="client", node=NODE, labels=shop)
    server = kubelet.run_pod(namespace=namespace, name="server", node=NODE, labels=shop)
    late = kubelet.run_pod(namespace=namespace, name="late", node=NODE, labels=shop)
    kubelet.run_pod(namespace=namespace, name="trainer", node=NODE, labels={"team": "ml"},
                    container="main")  # fmt: skip
    operator_port = free_port()
    start_operator("--namespace", namespace, "--metrics-host", "127.0.0.1",
                   "--metrics-port", str(operator_port))  # fmt: skip
    gpus = [FakeGpu(index=0, util=87, fb_used_mib=60000, fb_free_mib=21559)]
    behavior = KubeletBehavior(
        allocations=[Allocation(namespace, "trainer", "main", "nvidia.com/gpu", [gpu_uuid(0)])],
        allocatable=[("nvidia.com/gpu", gpu_uuid(0))],
    )
    with fake_exporter(ExporterBehavior(body=exposition(gpus, hostname=NODE))) as exporter, \
            fake_kubelet(str(tmp_path), behavior) as pod_resources:  # fmt: skip
        agent = start_agent(
            NODE, "--metrics-max-pods", "2", "--dcgm-exporter-host", exporter.host,
            "--pod-resources-socket", pod_resources.socket_path,
        )  # fmt: skip
        _sessions(control_plane, namespace, exporter.port)
        wait_for(lambda: _running(control_plane, "ts", namespace, "shop"), timeout=120,
                 what="the TraceSession Running on the node")  # fmt: skip
        wait_for(lambda: _running(control_plane, "gput", namespace, "ml"), timeout=120,
                 what="the GpuTelemetry session Running on the node")  # fmt: skip
        wait_for(lambda: _total(_scrape(agent.http_port)[1], "orb8_attached_interfaces") == 3,
                 timeout=60, what="the flow probe on all three shop veths")  # fmt: skip

        pods = [client, server, late]
        veth_before = _veth_bytes(pods)
        _, before = _scrape(agent.http_port)
        first = tcp_transfer(client=client, server=server, nbytes=2_000_000)
        # client and server took the two slots; the late pod finds none

        def both_pods_active() -> bool:
            _, samples = _scrape(agent.http_port)
            pods = {s.labels["pod"] for s in samples if s.name == "orb8_flow_bytes_total"}
            # the flows were seen moments ago: well inside the 30 s window
            active = _total(samples, "orb8_flows_active", pod="client")
            return pods == {"client", "server"} and active >= 1

        wait_for(both_pods_active, timeout=30, what="client and server series, active flows")
        second = tcp_transfer(client=late, server=server, nbytes=1_000_000, port=8081)
        assert first.received == 2_000_000 and second.received == 1_000_000
        victim_pid = make_victim(client)
        make_victim(late)
        veth_after = _veth_bytes(pods)
        # pod-relative egress is the host veth's rx; every byte is in some series
        sent = sum(veth_after[p]["rx_bytes"] - veth_before[p]["rx_bytes"] for p in veth_after)

        def settled() -> list[Sample] | None:
            _, samples = _scrape(agent.http_port)
            egress = _total(samples, "orb8_flow_bytes_total", direction="egress")
            alerts = _total(samples, "orb8_syscall_alerts_total")
            gpu = _series(samples, "orb8_gpu_memory_used_bytes")
            counted = egress - _total(before, "orb8_flow_bytes_total", direction="egress")
            return samples if counted >= sent * 0.99 and alerts >= 4 and gpu else None

        samples = wait_for(settled, timeout=60, what="all bytes, four alerts and GPU memory")
        reconciles = "orb8_operator_reconcile_duration_seconds_count"
        operator_types, operator_samples = wait_for(
            lambda: (got := _scrape(operator_port))
            and _total(got[1], reconciles, kind="TraceSession")
            and _total(got[1], reconciles, kind="GpuTelemetry")
            and got,
            timeout=60, what="operator reconcile durations for both kinds",
        )  # fmt: skip
        agent_types, _ = _scrape(agent.http_port)
        # Leave nothing for later tests' cluster-wide operators to reconcile.
        control_plane.kubectl("delete", "ts/shop", "gput/ml", "-n", namespace, "--timeout=60s")

    # Conservation across the cap: the sum over all series equals the veths' counters.
    egress = _total(samples, "orb8_flow_bytes_total", direction="egress") - _total(
        before, "orb8_flow_bytes_total", direction="egress"
    )
    assert abs(egress - sent) <= 0.01 * sent, (egress, sent)
    client_egress = _total(samples, "orb8_flow_bytes_total", pod="client", direction="egress")
    client_wire = veth_after["client"]["rx_bytes"] - veth_before["client"]["rx_bytes"]
    assert abs(client_egress - client_wire) <= 0.01 * client_wire
    late_wire = veth_after["late"]["rx_bytes"] - veth_before["late"]["rx_bytes"]
    other = _total(samples, "orb8_flow_bytes_total", pod="_other", direction="egress")
    assert abs(other - late_wire) <= 0.01 * late_wire, (other, late_wire)

    # The cap: two pods of their own, the late one folded and counted.
    pods_labelled = {s.labels["pod"] for s in samples if s.name == "orb8_flow_bytes_total"}
    assert pods_labelled == {"client", "server", "_other"}
    assert _total(samples, "orb8_metrics_series_capped_total", group="traffic") == 1
    assert _total(samples, "orb8_metrics_folded_pods") == 1
    assert _total(samples, "orb8_syscall_alerts_total", pod="client", syscall="ptrace") >= 1
    assert _total(samples, "orb8_syscall_alerts_total", pod="_other", syscall="mount") >= 1
    assert _total(samples, "orb8_ringbuf_events_total") >= 4
    assert _total(samples, "orb8_ringbuf_size_bytes") > 0
    assert _total(samples, "orb8_probes_loaded", probe="flows") == 1
    assert _total(samples, "orb8_probes_loaded", probe="syscalls") == 1
    assert _total(samples, "orb8_pods_tracked") == 3
    assert _total(samples, "orb8_watch_connected", watch="nodeagentconfig") == 1
    assert _total(samples, "orb8_status_writes_total", target="report", result="ok") >= 1
    assert _total(samples, "orb8_gpu_memory_used_bytes", pod="trainer") == 60000 * 2**20
    assert _total(samples, "orb8_gpu_utilization_ratio", pod="trainer") == 0.87

    # No IP, port, pid or flow ever becomes a label.
    forbidden = {client.ip, server.ip, late.ip, "8080", "8081", str(victim_pid)}
    for sample in samples + operator_samples:
        assert set(sample.labels) <= ALLOWED_LABELS, sample
        for value in sample.labels.values():
            assert value not in forbidden, sample
            try:
                ipaddress.ip_address(value)
            except ValueError:
                continue
            raise AssertionError(f"an IP address as a label value: {sample}")

    assert _total(operator_samples, "orb8_operator_sessions_active", kind="TraceSession") == 1
    assert _total(operator_samples, "orb8_operator_sessions_active", kind="GpuTelemetry") == 1
    assert _total(operator_samples, "orb8_watch_connected", watch="pods") == 1
    assert _total(operator_samples, "orb8_operator_node_config_syncs_total", result="ok") >= 1
    assert _total(operator_samples, "orb8_operator_pods_tracked") >= 4
    assert all(name.startswith("orb8_") for name in {**agent_types, **operator_types})

    # Every metric a dashboard query reads is one the live processes serve.
    exported = {s.name for s in samples + operator_samples}
    dashboard = json.loads(DASHBOARD.read_text())
    used = set().union(*(metric_names(e) for e in dashboard_expressions(dashboard)))
    assert used, "no PromQL found in the dashboard"
    assert used <= exported, sorted(used - exported)
