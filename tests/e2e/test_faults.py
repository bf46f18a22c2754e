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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orb8_agent.dataplane.objects import object_path
from orb8_common.models import NodeAgentConfigSpec
from orb8_dev import controlplane, reliability
from orb8_dev.faultproxy import FaultProxy
from tests.e2e.conftest import make_victim, tcp_transfer, wait_for
from tests.e2e.faults import (
    AGENT_GRACE_S,
    OPERATOR_GRACE_S,
    SHOP,
    Cluster,
    apply_session,
    first_seen,
    http_status,
    http_text,
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

    op_port = cluster.operator_ports[operator.pid]
    wait_for(lambda: http_status(op_port, "/readyz") == 200, timeout=60,
             what="the operator ready before the fault")  # fmt: skip
    stop()
    if watch_dies:
        wait_for(lambda: http_status(agent.http_port, "/readyz") == 503, timeout=90,
                 what="/readyz false while the watch is dead")  # fmt: skip
        wait_for(lambda: http_status(op_port, "/readyz") == 503, timeout=90,
                 what="the operator's /readyz false while its watches are dead")  # fmt: skip
    else:  # the apiserver stays up and keeps its watches open from its cache
        wait_for(lambda: not _apiserver_ready(cluster), timeout=90,
                 what="the apiserver to notice etcd is gone")  # fmt: skip
    during = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8082)
    start()
    recovered = time.monotonic()
    wait_for(lambda: http_status(agent.http_port, "/readyz") == 200, timeout=120,
             what="/readyz true again after the resync")  # fmt: skip
    wait_for(lambda: http_status(op_port, "/readyz") == 200, timeout=120,
             what="the operator's /readyz true again after its watches relist")  # fmt: skip
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
    readiness = (
        "agent and operator /readyz 503 during, 200 after" if watch_dies
        else "apiserver unready during (agent and operator watches served from its cache)"
    )  # fmt: skip
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
    agent = cluster.start_agent(NODE)
    for name in ("kept", "deleted"):
        apply_session(plane, ns, name)
    wait_for(lambda: all(running_on(plane, ns, n, {NODE}) for n in ("kept", "deleted")),
             timeout=120, what="both sessions Running")  # fmt: skip

    operator.kill()
    operator.wait(timeout=30)
    plane.kubectl("delete", "ts", "deleted", "-n", ns, "--wait=false")
    apply_session(plane, ns, "created")
    during = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8083)

    operator = cluster.start_operator()
    restarted = time.monotonic()
    port = cluster.operator_ports[operator.pid]

    def gone() -> bool:
        found = plane.kubectl("get", "ts", "deleted", "-n", ns, check=False)
        return found.returncode != 0 and "NotFound" in found.stderr

    # Polled together, so each is timed when it first holds: the restarted operator ready
    # (its watches synced), the kept session's status with the bytes sent while it was down.
    seen = first_seen({
        "the restarted operator ready once its watches synced":
            lambda: http_status(port, "/readyz") == 200,
        "the kept session merging again":
            lambda: reported_all(plane, ns, "kept", client, server, 8083, during),
        "the deletion made during the downtime to complete": gone,
        "the session created during the downtime Running":
            lambda: running_on(plane, ns, "created", {NODE}),
    }, timeout=120)  # fmt: skip
    ready_at = seen["the restarted operator ready once its watches synced"].at
    resumed = seen["the kept session merging again"]
    resumed_s = resumed.at - restarted
    seen_bytes = resumed.value
    assert seen_bytes <= during.wire_bytes * 1.01, (seen_bytes, during)
    sessions = [s["name"] for s in node_config(plane, NODE)["spec"].get("sessions") or []]
    assert "deleted" not in sessions and {"kept", "created"} <= set(sessions), sessions
    # The agent never lost the apiserver: ready throughout.
    assert http_status(agent.http_port, "/readyz") == 200
    exited = terminate(operator, grace_s=OPERATOR_GRACE_S)
    assert exited is not None and operator.returncode == 0, "the restarted operator on SIGTERM"
    reliability.record(
        fault="operator SIGKILL; a session deleted, one created and traffic sent while down",
        asserted="deletion completes, new session Running, kept session's flow within 1% of "
        "the veth counters, node config without the deleted session, agent /readyz 200, "
        f"restarted operator /readyz 200, SIGTERM exit in {exited:.1f} s",
        recovery_s=resumed_s,
        ready_s=resumed.at - ready_at,
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


# 200 sandboxes (netns, veth, cgroup) and their Pod objects: minutes on a loaded
# 2-core machine, longer than the default 300 s test timeout.
@pytest.mark.timeout(1500)
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
    operator = cluster.start_operator()
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
        # Pods alternate between the nodes, so deleting every other one would empty
        # node-c2; the first half of each wave goes instead (both nodes keep pods).
        for pod in created[:25]:
            cluster.kubelet.delete_pod(pod)
            live.pop(pod.name)
    churned = time.monotonic()
    expected = {node: {n for n, p in live.items() if p.node == node} for node in nodes}
    assert all(expected.values()), f"the churn must leave pods on every node: {expected}"

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
    for agent in cluster.agents:
        assert http_status(agent.http_port, "/readyz") == 200, agent.node
    assert http_status(cluster.operator_ports[operator.pid], "/readyz") == 200
    exits = [terminate(a.proc, grace_s=AGENT_GRACE_S) for a in cluster.agents]
    exits.append(terminate(operator, grace_s=OPERATOR_GRACE_S))
    assert None not in exits, f"outlived the grace period after SIGTERM: {exits}"
    assert [a.proc.returncode for a in cluster.agents] == [0, 0] and operator.returncode == 0
    slowest = max(e for e in exits if e is not None)
    reliability.record(
        fault="200 pods created and 100 deleted in 4 waves over a running session, 2 nodes",
        asserted="both NodeAgentConfigs hold exactly the live pods, matchedPods = 101, every "
        "node Running with no message, agents and operator /readyz 200, SIGTERM exits "
        f"(slowest {slowest:.1f} s)",
        recovery_s=settled_s,
    )


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


@dataclass(frozen=True)
class Lacking:
    """A node that lacks something the probes need, and what its node entry must say."""

    fault: str
    wrap: tuple[str, ...]  # command prefix for the agent
    args: tuple[str, ...]  # extra agent arguments
    state: str  # the node entry's state
    failed: tuple[str, ...]  # probes that cannot load
    says: tuple[str, ...]  # in the node entry's message


# The agent runs as root, so dropping capabilities from its bounding set leaves it
# exactly what a DaemonSet without them would have. Loading a tc program needs
# CAP_NET_ADMIN (or SYS_ADMIN) besides CAP_BPF, a tracing program CAP_PERFMON:
# without NET_ADMIN only the flow probe fails, without all four nothing loads.
# Without BTF (--btf-path naming a file that is not there, as on a kernel built
# without CONFIG_DEBUG_INFO_BTF) neither probe's CO-RE relocations resolve.
LACKING = {
    "no-net-admin": Lacking(
        "agent without the NET_ADMIN and SYS_ADMIN capabilities",
        ("setpriv", "--bounding-set=-net_admin,-sys_admin", "--"), (), "Degraded",
        ("flows",), ("EPERM", "CAP_NET_ADMIN"),
    ),
    "no-bpf": Lacking(
        "agent without the BPF, PERFMON, NET_ADMIN and SYS_ADMIN capabilities",
        ("setpriv", "--bounding-set=-bpf,-perfmon,-net_admin,-sys_admin", "--"), (), "Failed",
        ("flows", "syscalls", "tcp"), ("EPERM", "CAP_NET_ADMIN"),
    ),
    "no-btf": Lacking(
        "node without BTF (agent --btf-path naming a missing file)",
        (), ("--btf-path", "/nonexistent/orb8-test/vmlinux"), "Failed",
        ("flows", "syscalls", "tcp"), ("ENOENT", "check BTF"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LACKING))
def test_a_node_lacking_btf_or_a_capability_reports_why_and_keeps_running(
    cluster: Cluster, case: str
) -> None:
    """The agent runs without a capability (setpriv --bounding-set) or without BTF: the
    session's node entry turns Degraded or Failed naming each probe that cannot load, the
    errno and the remedy, in one line; the session's Degraded condition carries it;
    NodeAgentConfig status says what the node has and why each probe failed; the agent
    keeps running (no crash loop without a message) and stops on SIGTERM."""
    lack = LACKING[case]
    loaded = [p for p in ("flows", "syscalls", "tcp") if p not in lack.failed]
    plane = cluster.plane
    ns = cluster.namespace()
    cluster.kubelet.add_node(name=NODE)
    client = cluster.kubelet.run_pod(namespace=ns, name="client", node=NODE, labels=SHOP)
    cluster.kubelet.run_pod(namespace=ns, name="server", node=NODE, labels=SHOP)
    cluster.start_operator()
    agent = cluster.start_agent(NODE, *lack.args, wrap=lack.wrap)
    apply_session(plane, ns, "lacking")

    def entry() -> dict[str, Any] | None:
        for found in session_status(plane, ns, "lacking").get("nodes") or []:
            if found.get("node") == NODE and found.get("state") == lack.state:
                return dict(found)
        return None

    node = wait_for(entry, timeout=120, what=f"the node entry {lack.state}: {lack.fault}")
    message = node["message"]
    assert "\n" not in message, message
    for probe in lack.failed:
        assert f"{probe} probe unavailable" in message, message
    for text in lack.says:
        assert text in message, message
    assert node.get("probes", []) == loaded, node
    degraded = wait_for(
        lambda: (c := _condition(session_status(plane, ns, "lacking"), "Degraded"))
        .get("status") == "True" and c,
        timeout=60, what="the session's Degraded condition",
    )  # fmt: skip
    assert f"{NODE}: {lack.state}" in degraded["message"], degraded
    assert lack.says[0] in degraded["message"], degraded

    def node_status() -> dict[str, Any] | None:
        status = node_config(plane, NODE).get("status") or {}
        probes = {p["name"]: p for p in status.get("probes") or []}
        return status if all(p in probes for p in lack.failed) else None

    status = wait_for(node_status, timeout=60, what="the probe failures in NodeAgentConfig status")
    probes = {p["name"]: p for p in status["probes"]}
    for probe in lack.failed:
        assert probes[probe]["loadable"] is False, probes
        assert lack.says[0] in probes[probe]["message"], probes
    if case == "no-btf":
        assert status["kernel"]["btf"] is False, status
        # libbpf's own words stay in the probe's status (not in the session's one line)
        assert "failed to parse target BTF" in probes["flows"]["message"], probes
    else:
        assert "NET_ADMIN" not in status.get("capabilities", []), status
    if loaded:  # the syscall probe still alerts
        make_victim(client, calls="ptrace")
        wait_for(lambda: (entry() or {}).get("alertCount", 0) >= 1, timeout=60,
                 what="an alert from the probe that did load")  # fmt: skip
    # Alive and ready (its watch works); healthy only while some probe is loaded, and
    # then /healthz says why in one line.
    assert agent.proc.poll() is None, agent.logs()[-3000:]
    assert http_status(agent.http_port, "/readyz") == 200
    health = http_text(agent.http_port, "/healthz")
    if loaded:
        assert health == (200, "ok"), health
    else:
        assert health[0] == 503 and "no probe loaded" in health[1] and "\n" not in health[1]
    exited = terminate(agent.proc, grace_s=AGENT_GRACE_S)
    assert exited is not None and agent.proc.returncode == 0, agent.logs()[-3000:]
    reliability.record(
        fault=lack.fault,
        asserted=f"node entry {lack.state} naming the {' and '.join(lack.failed)} probe, "
        f"{lack.says[0]} and the remedy, in one line; session Degraded=True with it; "
        "NodeAgentConfig status with each probe's failure and "
        f"{'kernel.btf false' if case == 'no-btf' else 'capabilities without NET_ADMIN'}; "
        f"agent keeps running, /readyz 200, /healthz {'200' if loaded else '503 with why'}"
        f"{', alerts still reported' if loaded else ''}; SIGTERM exit in {exited:.1f} s",
        recovery_s=None,
    )
