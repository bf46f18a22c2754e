"""Faults clusters really have, each with its recovery asserted and measured.

Every test runs on a private control plane (tests/e2e/faults.py), kills or
disturbs something, and then asserts that the agent and operator keep
going: /readyz follows the watch, results resume (the measured time goes to
build/reliability.jsonl for docs/reliability.md), bytes sent during the
outage are reported afterwards and match the veth counters, and SIGTERM
ends each process within its grace period.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orb8_agent.dataplane.objects import object_path
from orb8_common.models import NodeAgentConfigSpec
from orb8_dev import controlplane, reliability
from orb8_dev.faultproxy import FaultProxy
from tests.e2e.conftest import tcp_transfer, wait_for
from tests.e2e.faults import (
    AGENT_GRACE_S,
    OPERATOR_GRACE_S,
    SHOP,
    Cluster,
    apply_session,
    http_status,
    node_config,
    reported_all,
    running_on,
    session_status,
    terminate,
)  # fmt: skip

NODE = "node-f"


def _outage_keeps_the_kernel_counters(
    cluster: Cluster, *, fault: str, stop: Callable[[], None], start: Callable[[], None],
    watch_dies: bool,
) -> None:  # fmt: skip
    plane = cluster.plane
    ns = cluster.namespace()
    cluster.kubelet.add_node(name=NODE)
    client = cluster.kubelet.run_pod(namespace=ns, name="client", node=NODE, labels=SHOP)
    server = cluster.kubelet.run_pod(namespace=ns, name="server", node=NODE, labels=SHOP)
    operator = cluster.start_operator()
    agent = cluster.start_agent(NODE)
    apply_session(plane, ns, "outage")
    wait_for(lambda: running_on(plane, ns, "outage", {NODE}), timeout=120,
             what="the session Running before the fault")  # fmt: skip
    before = tcp_transfer(client=client, server=server, nbytes=1_000_000, port=8081)
    wait_for(lambda: reported_all(plane, ns, "outage", client, server, 8081, before),
             timeout=60, what="the flow sent before the fault")  # fmt: skip

    stop()
    if watch_dies:
        wait_for(lambda: http_status(agent.http_port, "/readyz") == 503, timeout=90,
                 what="/readyz false while the watch is dead")  # fmt: skip
    else:  # the apiserver stays up and keeps its watches open from its cache
        wait_for(lambda: not _apiserver_ready(cluster), timeout=90,
                 what="the apiserver to notice etcd is gone")  # fmt: skip
    during = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8082)
    start()
    recovered = time.monotonic()
    wait_for(lambda: http_status(agent.http_port, "/readyz") == 200, timeout=120,
             what="/readyz true again after the resync")  # fmt: skip
    seen = wait_for(lambda: reported_all(plane, ns, "outage", client, server, 8082, during),
                    timeout=120, interval=0.2,
                    what="the flow sent during the outage in the session status")  # fmt: skip
    resumed_s = time.monotonic() - recovered
    # Nothing lost, nothing doubled: the probe's bytes against the veth's.
    assert during.wire_bytes * 0.99 <= seen <= during.wire_bytes * 1.01, (seen, during)
    after = reported_all(plane, ns, "outage", client, server, 8081, before)
    assert after is not None and after <= before.wire_bytes * 1.01, (after, before)
    # The operator keeps merging: a new session on the same pods runs.
    apply_session(plane, ns, "after-outage")
    wait_for(lambda: running_on(plane, ns, "after-outage", {NODE}), timeout=120,
             what="a session created after the outage Running")  # fmt: skip
    assert agent.proc.poll() is None and operator.poll() is None
    agent_exit = terminate(agent.proc, grace_s=AGENT_GRACE_S)
    operator_exit = terminate(operator, grace_s=OPERATOR_GRACE_S)
    assert agent_exit is not None, "the agent outlived its grace period after SIGTERM"
    assert operator_exit is not None, "the operator outlived its grace period after SIGTERM"
    assert agent.proc.returncode == 0 and operator.returncode == 0
    readiness = "agent /readyz 503 during, 200 after" if watch_dies else "apiserver unready during"
    reliability.record(
        fault=fault,
        asserted=f"{readiness}; a flow sent during the outage reported "
        "afterwards within 1% of the veth counters; new session Running; SIGTERM exits "
        f"(agent {agent_exit:.1f} s, operator {operator_exit:.1f} s)",
        recovery_s=resumed_s,
    )


def _apiserver_ready(cluster: Cluster) -> bool:
    try:
        return cluster.plane.get("/readyz") == b"ok"
    except OSError:
        return False


def test_kube_apiserver_killed_and_restarted(cluster: Cluster) -> None:
    state = cluster.plane.state_dir
    _outage_keeps_the_kernel_counters(
        cluster, fault="kube-apiserver SIGKILL, restarted (etcd kept)",
        stop=lambda: controlplane.stop_apiserver(state_dir=state),
        start=lambda: (controlplane.start_apiserver(state_dir=state), None)[1], watch_dies=True,
    )  # fmt: skip


def test_etcd_killed_and_restarted(cluster: Cluster) -> None:
    state = cluster.plane.state_dir
    _outage_keeps_the_kernel_counters(
        cluster, fault="etcd SIGKILL, restarted on its data",
        stop=lambda: controlplane.stop_etcd(state_dir=state),
        start=lambda: (controlplane.start_etcd(state_dir=state), None)[1], watch_dies=False,
    )  # fmt: skip


def test_operator_sigkill_with_changes_while_it_is_down(cluster: Cluster) -> None:
    """SIGKILL the operator; while it is down a session is deleted, another created and
    traffic flows. After the restart the deletion completes, the new session runs and
    the old one's status gets the bytes (veth oracle)."""
    plane = cluster.plane
    ns = cluster.namespace()
    cluster.kubelet.add_node(name=NODE)
    client = cluster.kubelet.run_pod(namespace=ns, name="client", node=NODE, labels=SHOP)
    server = cluster.kubelet.run_pod(namespace=ns, name="server", node=NODE, labels=SHOP)
    operator = cluster.start_operator()
    cluster.start_agent(NODE)
    for name in ("kept", "deleted"):
        apply_session(plane, ns, name)
    wait_for(lambda: all(running_on(plane, ns, n, {NODE}) for n in ("kept", "deleted")),
             timeout=120, what="both sessions Running")  # fmt: skip

    operator.kill()
    operator.wait(timeout=30)
    plane.kubectl("delete", "ts", "deleted", "-n", ns, "--wait=false")
    apply_session(plane, ns, "created")
    during = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8083)

    cluster.start_operator()
    restarted = time.monotonic()

    def gone() -> bool:
        found = plane.kubectl("get", "ts", "deleted", "-n", ns, check=False)
        return found.returncode != 0 and "NotFound" in found.stderr

    wait_for(gone, timeout=120, what="the deletion made during the downtime to complete")
    wait_for(lambda: running_on(plane, ns, "created", {NODE}), timeout=120,
             what="the session created during the downtime Running")  # fmt: skip
    seen = wait_for(lambda: reported_all(plane, ns, "kept", client, server, 8083, during),
                    timeout=120, interval=0.2, what="the kept session merging again")  # fmt: skip
    resumed_s = time.monotonic() - restarted
    assert seen <= during.wire_bytes * 1.01, (seen, during)
    sessions = [s["name"] for s in node_config(plane, NODE)["spec"].get("sessions") or []]
    assert "deleted" not in sessions and {"kept", "created"} <= set(sessions), sessions
    reliability.record(
        fault="operator SIGKILL; a session deleted, one created and traffic sent while down",
        asserted="deletion completes, new session Running, kept session's flow within 1% of "
        "the veth counters, node config without the deleted session",
        recovery_s=resumed_s,
    )


def test_a_probe_that_cannot_load_degrades_the_session_with_the_remedy(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A node where the syscall probe cannot load (its object is missing, as on a node
    whose image lacks it): sessions report Degraded with why, flows still work."""
    plane = cluster.plane
    ns = cluster.namespace()
    cluster.kubelet.add_node(name=NODE)
    client = cluster.kubelet.run_pod(namespace=ns, name="client", node=NODE, labels=SHOP)
    server = cluster.kubelet.run_pod(namespace=ns, name="server", node=NODE, labels=SHOP)
    partial_objects = tmp_path / "bpf"
    partial_objects.mkdir()
    shutil.copy(object_path(name="flows"), partial_objects / "flows.bpf.o")
    cluster.start_operator()
    agent = cluster.start_agent(NODE, env={"ORB8_BPF_DIR": str(partial_objects)})
    apply_session(plane, ns, "half")

    def degraded() -> dict[str, Any] | None:
        for entry in session_status(plane, ns, "half").get("nodes") or []:
            if entry.get("node") == NODE and entry.get("state") == "Degraded":
                return dict(entry)
        return None

    entry = wait_for(degraded, timeout=120, what="the node Degraded for the missing probe")
    assert "syscalls probe unavailable" in entry["message"], entry
    assert "syscalls.bpf.o" in entry["message"], entry
    assert entry.get("probes") == ["flows"], entry
    transfer = tcp_transfer(client=client, server=server, nbytes=1_000_000, port=8084)
    wait_for(lambda: reported_all(plane, ns, "half", client, server, 8084, transfer),
             timeout=60, what="flows reported although the syscall probe is missing")  # fmt: skip
    assert http_status(agent.http_port, "/healthz") == 200  # one probe still loads
    reliability.record(
        fault="node lacking a probe (syscall BPF object missing)",
        asserted="session node entry Degraded naming the probe and the missing object; "
        "flows still reported; /healthz 200",
        recovery_s=None,
    )


def _retry_delays(log: str) -> list[float]:
    return [float(d) for d in re.findall(r"retrying in ([0-9.]+)s", log)]


def test_cut_watches_and_injected_409_429_5xx_through_a_fault_proxy(cluster: Cluster) -> None:
    """The agent talks to the apiserver through orb8_dev.faultproxy: its watch streams are
    cut mid-response, writes get 409, other requests 429/500/503; then every request
    fails for a while. It backs off, turns unready, and once the faults stop it is ready
    again and the bytes sent meanwhile reach the session status (veth oracle)."""
    plane = cluster.plane
    ns = cluster.namespace()
    cluster.kubelet.add_node(name=NODE)
    client = cluster.kubelet.run_pod(namespace=ns, name="client", node=NODE, labels=SHOP)
    server = cluster.kubelet.run_pod(namespace=ns, name="server", node=NODE, labels=SHOP)
    cluster.start_operator()
    proxy = FaultProxy(plane=plane, state_dir=cluster.tmp).start()
    try:
        agent = cluster.start_agent(NODE, kubeconfig=proxy.kubeconfig)
        apply_session(plane, ns, "proxied")
        wait_for(lambda: running_on(plane, ns, "proxied", {NODE}), timeout=120,
                 what="the session Running through the proxy")  # fmt: skip

        proxy.set(cut_watches_after_s=1.0, status_rate=0.3, conflict_writes=True)
        during = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8085)
        faults = proxy.faults
        wait_for(
            lambda: faults.cut >= 3 and faults.injected[409] >= 1
            and faults.injected[429] + faults.injected[500] + faults.injected[503] >= 3,
            timeout=120, what="cut watches, 409s and 429/5xx injected",
        )  # fmt: skip
        proxy.set(status_rate=1.0)
        wait_for(lambda: http_status(agent.http_port, "/readyz") == 503, timeout=90,
                 what="/readyz false while every request fails")  # fmt: skip
        wait_for(lambda: max(_retry_delays(agent.logs()), default=0) >= 2, timeout=90,
                 what="the watch's retries to back off to 2 s")  # fmt: skip
        assert http_status(agent.http_port, "/readyz") == 503
        assert agent.proc.poll() is None, agent.logs()

        proxy.set(cut_watches_after_s=None, status_rate=0.0, conflict_writes=False)
        cleared = time.monotonic()
        wait_for(lambda: http_status(agent.http_port, "/readyz") == 200, timeout=120,
                 what="/readyz true once the faults stop")  # fmt: skip
        seen = wait_for(lambda: reported_all(plane, ns, "proxied", client, server, 8085, during),
                        timeout=120, interval=0.2,
                        what="bytes sent under faults in the status")  # fmt: skip
        resumed_s = time.monotonic() - cleared
        assert seen <= during.wire_bytes * 1.01, (seen, during)
        delays = _retry_delays(agent.logs())
        assert min(delays) < max(delays), delays
        exited = terminate(agent.proc, grace_s=AGENT_GRACE_S)
        assert exited is not None and agent.proc.returncode == 0, agent.logs()[-3000:]
    finally:
        proxy.close()
    reliability.record(
        fault="watch streams cut mid-response, 409 on writes, 429/500/503 on 30% then all "
        "requests (fault proxy)",
        asserted=f"agent alive, retries back off ({min(delays):g}..{max(delays):g} s), /readyz 503 "
        "while all fail and 200 after, bytes sent under faults within 1% of the veth counters, "
        f"SIGTERM exit in {exited:.1f} s",
        recovery_s=resumed_s,
    )


def _config_pods(cluster: Cluster, node: str) -> set[str]:
    found = cluster.plane.kubectl("get", "nac", node, "-o", "json", check=False)
    if found.returncode != 0:
        return set()
    spec = NodeAgentConfigSpec.model_validate(json.loads(found.stdout).get("spec") or {})
    return {pod.name for s in spec.sessions for pod in s.pods}


def test_two_hundred_pods_churned_over_a_running_session(cluster: Cluster) -> None:
    """200 pods created and half of them deleted again, in waves, across two nodes while
    a session runs: node configs and matchedPods converge on what is left, every node
    Running (no stale problem about a pod that is gone)."""
    plane = cluster.plane
    ns = cluster.namespace()
    nodes = ("node-c1", "node-c2")
    for node in nodes:
        cluster.kubelet.add_node(name=node)
        cluster.start_agent(node)
    cluster.start_operator()
    apply_session(plane, ns, "churned")
    first = cluster.kubelet.run_pod(namespace=ns, name="p-000", node=nodes[0], labels=SHOP)
    wait_for(lambda: running_on(plane, ns, "churned", {nodes[0]}), timeout=120,
             what="the session Running before the churn")  # fmt: skip
    live = {first.name: first}
    for wave in range(4):
        created = []
        for i in range(50):
            index = wave * 50 + i + 1
            node = nodes[index % 2]
            name = f"p-{index:03d}"
            created.append(cluster.kubelet.run_pod(namespace=ns, name=name, node=node,
                                                   labels=SHOP))  # fmt: skip
        live.update((pod.name, pod) for pod in created)
        for pod in created[::2]:  # every other one goes again
            cluster.kubelet.delete_pod(pod)
            live.pop(pod.name)
    churned = time.monotonic()
    expected = {node: {n for n, p in live.items() if p.node == node} for node in nodes}

    def converged() -> bool:
        st = session_status(plane, ns, "churned")
        return (all(_config_pods(cluster, node) == expected[node] for node in nodes)
                and st.get("matchedPods") == len(live)
                and running_on(plane, ns, "churned", set(nodes)))  # fmt: skip

    wait_for(converged, timeout=300, interval=1.0,
             what=f"node configs and matchedPods={len(live)} after the churn")  # fmt: skip
    settled_s = time.monotonic() - churned
    st = session_status(plane, ns, "churned")
    assert st["matchedPods"] == 101
    for entry in st.get("nodes") or []:
        assert not entry.get("message"), entry
    reliability.record(
        fault="200 pods created and 100 deleted in 4 waves over a running session, 2 nodes",
        asserted="both NodeAgentConfigs hold exactly the live pods, matchedPods = 101, every "
        "node Running with no message",
        recovery_s=settled_s,
    )
