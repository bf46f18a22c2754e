"""orb8 as users run it: the images built here, installed by Helm on the real
node, tracing real pods started by the kubelet and containerd.

The oracles are the kernel's own: host-side veth counters for bytes, the
container's cgroup for the pid that made a syscall, ``tc`` and ``bpftool``
for what is attached. The module's last test uninstalls the release.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orb8_dev import nodepods, release
from orb8_dev.controlplane import free_port
from orb8_dev.gpu_servers import FakeGpu, Pod, exposition, gpu_uuid
from orb8_dev.node import LocalNode
from orb8_dev.nodepods import RunningPod
from orb8_dev.release import Orb8Release

# The first test also pays for the module fixture: `make images` (minutes when
# cold; `make test` builds them before pytest) and importing them into a fresh
# containerd root (tens of seconds per image).
pytestmark = pytest.mark.timeout(1800)

WEB = {"tier": "web"}
SINK = "nc -ll -p 8080 -e orb8-sink & " + nodepods.IDLE


def wait_for(predicate: Callable[[], Any], *, timeout: float = 120, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def orb8(real_node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orb8Release]:
    """`make images`, imported into containerd, and `helm install orb8 charts/orb8`."""
    archives = release.build_images()
    installed = release.install(
        node=real_node, helm_home=tmp_path_factory.mktemp("helm"), archives=archives
    )
    try:
        yield installed
    finally:
        if installed.pods():
            release.uninstall(release=installed)


def _namespace(node: LocalNode) -> str:
    name = f"orb8-e2e-{secrets.token_hex(3)}"
    nodepods.create_namespace(node=node, name=name)
    return name


def _run(node: LocalNode, ns: str, name: str, *, labels: dict[str, str] | None = None,
         command: str = nodepods.IDLE) -> RunningPod:  # fmt: skip
    nodepods.apply(
        node=node,
        manifest=nodepods.app_pod(name=name, namespace=ns, labels=labels, command=command),
    )
    return nodepods.wait_running(node=node, namespace=ns, name=name)


def _session(node: LocalNode, ns: str, name: str, *, selector: dict[str, str]) -> None:
    session = {
        "apiVersion": "orb8.io/v1alpha1",
        "kind": "TraceSession",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"podSelector": {"matchLabels": selector}},
            "probes": {
                "network": {"enabled": True, "topFlows": 50},
                "syscalls": {"enabled": True, "alertOn": ["ptrace", "mount"]},
            },
            "duration": "30m",
            "reportInterval": "2s",
        },
    }
    node.plane.kubectl("apply", "-f", "-", input=json.dumps(session))


def _status(node: LocalNode, ns: str, name: str, kind: str = "ts") -> dict[str, Any]:
    out = node.plane.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def _attached(node: LocalNode, ns: str, name: str, pods: list[RunningPod]) -> None:
    """Wait until the agent reports the session Running with orb8 filters on every pod's veth."""

    def ready() -> bool:
        st = _status(node, ns, name)
        running = any(n.get("state") == "Running" for n in st.get("nodes") or [])
        return running and all(
            nodepods.orb8_tc_filters(interface=nodepods.host_veth(node=node, pod=pod))
            for pod in pods
        )

    wait_for(ready, what=f"the agent attached to {[p.name for p in pods]}")


def _rx_bytes(interface: str) -> int:
    return int(Path(f"/sys/class/net/{interface}/statistics/rx_bytes").read_text())


def _flow_bytes(status: dict[str, Any], *, src: RunningPod, dst: RunningPod) -> int:
    return sum(
        f["bytes"]
        for f in status.get("flows") or []
        if f["source"].get("pod") == src.name
        and f["destination"].get("pod") == dst.name
        and f["destination"].get("port") == 8080
    )


def _send(node: LocalNode, *, src: RunningPod, dst: RunningPod, nbytes: int) -> int:
    """Send ``nbytes`` from src to dst's sink; return what src's host veth received
    meanwhile (tc ingress on the host veth is the pod's egress)."""
    veth = nodepods.host_veth(node=node, pod=src)
    before = _rx_bytes(veth)
    nodepods.exec_in(
        node=node, pod=src,
        command=f"dd if=/dev/zero bs=1000 count={nbytes // 1000} 2>/dev/null | nc {dst.ip} 8080",
    )  # fmt: skip
    return _rx_bytes(veth) - before


def test_the_daemonset_agent_attributes_flows_and_alerts_of_real_pods(
    real_node: LocalNode, orb8: Orb8Release
) -> None:
    ns = _namespace(real_node)
    server = _run(real_node, ns, "server", labels=WEB, command=SINK)
    client = _run(real_node, ns, "client", labels=WEB)
    _session(real_node, ns, "web", selector=WEB)
    _attached(real_node, ns, "web", [server, client])

    sent_on_wire = _send(real_node, src=client, dst=server, nbytes=4_000_000)
    assert sent_on_wire > 4_000_000

    def counted() -> int:
        got = _flow_bytes(_status(real_node, ns, "web"), src=client, dst=server)
        # Within 1% of the veth's own count (it also saw the odd ARP/ND packet).
        return got if abs(got - sent_on_wire) <= 0.01 * sent_on_wire else 0

    wait_for(counted, what=f"client→server bytes within 1% of the veth's {sent_on_wire}")
    st = _status(real_node, ns, "web")
    flow = next(
        f for f in st["flows"]
        if f["source"].get("pod") == "client" and f["destination"].get("port") == 8080
    )  # fmt: skip
    src = flow["source"]
    assert (src["namespace"], src["pod"], src["ip"]) == (ns, "client", client.ip)
    assert flow["destination"] == {"namespace": ns, "pod": "server", "ip": server.ip,
                                   "port": 8080}  # fmt: skip
    assert flow["protocol"] == "TCP" and flow["node"] == real_node.name

    # A syscall alert from a real container: hold the process until its host
    # pid is known, then let it call ptrace (exec keeps the pid).
    nodepods.exec_in(
        node=real_node, pod=client,
        command="sh -c 'sleep 3; exec orb8-victim ptrace' > /dev/null 2>&1 &",
    )  # fmt: skip
    cgroup = nodepods.container_cgroup(node=real_node, pod=client)

    def victim_pid() -> int:
        for pid in (cgroup / "cgroup.procs").read_text().split():
            try:
                if b"orb8-victim ptrace" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                continue
        return 0

    pid = wait_for(victim_pid, timeout=30, what="the held victim process in the container")

    def alert() -> dict[str, Any] | None:
        alerts = _status(real_node, ns, "web").get("alerts") or []
        return next((a for a in alerts if a["syscall"] == "ptrace"), None)

    found = wait_for(alert, what="a ptrace alert")
    assert (found["namespace"], found["pod"], found["container"], found["node"]) == (
        ns, "client", "app", real_node.name,
    )  # fmt: skip
    assert found["process"] == {"pid": pid, "comm": "orb8-victim"}


def test_pods_joining_and_leaving_the_selection(real_node: LocalNode, orb8: Orb8Release) -> None:
    ns = _namespace(real_node)
    server = _run(real_node, ns, "server", labels=WEB, command=SINK)
    stays = _run(real_node, ns, "stays", labels=WEB)
    _session(real_node, ns, "web", selector=WEB)
    _attached(real_node, ns, "web", [server, stays])

    # A pod created after the session started is picked up.
    late = _run(real_node, ns, "late", labels=WEB)
    _attached(real_node, ns, "web", [late])
    _send(real_node, src=late, dst=server, nbytes=500_000)
    wait_for(lambda: _flow_bytes(_status(real_node, ns, "web"), src=late, dst=server),
             what="a flow from the late pod")  # fmt: skip

    # A pod relabelled out of the selector keeps its veth but loses orb8's filters.
    stays_veth = nodepods.host_veth(node=real_node, pod=stays)
    real_node.plane.kubectl("label", "pod", "stays", "-n", ns, "tier=batch", "--overwrite")
    wait_for(lambda: not nodepods.orb8_tc_filters(interface=stays_veth),
             what="filters removed from a pod that left the selector")  # fmt: skip

    # A deleted pod: its veth goes with it, and the agent forgets it.
    late_veth = nodepods.host_veth(node=real_node, pod=late)
    real_node.plane.kubectl("delete", "pod", "late", "-n", ns, "--wait=true", timeout=120)
    assert not Path(f"/sys/class/net/{late_veth}").exists()
    state = Path(f"/run/orb8/agent-{real_node.name}/tc.json")
    wait_for(lambda: late_veth not in state.read_text() and stays_veth not in state.read_text(),
             what="the agent's tc state without the departed pods")  # fmt: skip
    # The pods still selected keep theirs.
    assert nodepods.orb8_tc_filters(interface=nodepods.host_veth(node=real_node, pod=server))


def test_agent_rollout_restart_leaves_nothing_behind_and_totals_grow(
    real_node: LocalNode, orb8: Orb8Release
) -> None:
    ns = _namespace(real_node)
    server = _run(real_node, ns, "server", labels=WEB, command=SINK)
    client = _run(real_node, ns, "client", labels=WEB)
    _session(real_node, ns, "web", selector=WEB)
    _attached(real_node, ns, "web", [server, client])
    _send(real_node, src=client, dst=server, nbytes=1_000_000)
    before = wait_for(
        lambda: (
            (_status(real_node, ns, "web").get("summary") or {}).get("bytes", 0) > 1_000_000
            and _status(real_node, ns, "web")["summary"]
        ),
        what="the first bytes in the summary",
    )
    old_pod = orb8.agent_pod()
    old_pids = nodepods.container_pids(
        node=real_node, pod=_agent(real_node, orb8), container="agent"
    )

    real_node.plane.kubectl(
        "rollout", "restart", f"ds/{orb8.agent_daemonset}", "-n", orb8.namespace
    )
    real_node.plane.kubectl(
        "rollout", "status", f"ds/{orb8.agent_daemonset}", "-n", orb8.namespace, "--timeout=180s",
        timeout=200,
    )  # fmt: skip
    new_pod = orb8.agent_pod()
    assert new_pod["metadata"]["name"] != old_pod["metadata"]["name"]
    new_pids = nodepods.container_pids(
        node=real_node, pod=_agent(real_node, orb8), container="agent"
    )
    assert not [pid for pid in old_pids if Path(f"/proc/{pid}").exists()]
    _attached(real_node, ns, "web", [server, client])

    # One agent's filters per direction on each veth, all pointing at programs
    # the new agent holds (the old agent is gone, so none of its is attached).
    held = nodepods.bpf_prog_ids_held(pids=new_pids)
    assert held
    for pod in (server, client):
        filters = nodepods.orb8_tc_filters(interface=nodepods.host_veth(node=real_node, pod=pod))
        assert sorted(f["direction"] for f in filters) == ["egress", "ingress"], filters
        assert {f["options"]["prog"]["id"] for f in filters} <= held

    _send(real_node, src=client, dst=server, nbytes=1_000_000)

    def counted() -> dict[str, Any] | None:
        summary: dict[str, Any] = _status(real_node, ns, "web").get("summary") or {}
        # The new agent continues from the old one's totals and adds the second megabyte.
        return summary if summary.get("bytes", 0) >= before["bytes"] + 1_000_000 else None

    after = wait_for(
        counted,
        what=f"session bytes past {before['bytes']} + 1 MB: the totals continued across "
        "the agent restart and the new agent counted the second megabyte",
    )
    assert after["flows"] >= before["flows"] + 1  # the second transfer is a new connection
    assert after["packets"] > before["packets"]


def _agent(node: LocalNode, installed: Orb8Release) -> RunningPod:
    name = installed.agent_pod()["metadata"]["name"]
    return nodepods.wait_running(node=node, namespace=installed.namespace, name=name)


def test_gpu_telemetry_from_an_exporter_pod_and_the_kubelets_pod_resources(
    real_node: LocalNode, orb8: Orb8Release
) -> None:
    ns = _namespace(real_node)
    trainer = _run(real_node, ns, "trainer", labels={"team": "ml"})
    port = free_port()
    # dcgm-exporter's text, in Kubernetes mode (pod labels), for this node.
    gpu = FakeGpu(index=0, util=87, fb_used_mib=60000, fb_free_mib=21559,
                  pods=[Pod(ns, trainer.name, "app")])  # fmt: skip
    body = exposition([gpu], hostname=real_node.name, kubernetes_mode=True)
    real_node.plane.kubectl(
        "create", "configmap", "dcgm-metrics", "-n", ns, f"--from-literal=metrics={body}"
    )
    exporter = nodepods.app_pod(
        name="dcgm-exporter", namespace=ns, host_network=True,
        command=f"exec httpd -f -p {real_node.network.node_ip}:{port} -h /www",
    )  # fmt: skip
    exporter["spec"]["containers"][0]["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
    exporter["spec"]["volumes"] = [{"name": "www", "configMap": {"name": "dcgm-metrics"}}]
    nodepods.apply(node=real_node, manifest=exporter)
    nodepods.wait_running(node=real_node, namespace=ns, name="dcgm-exporter")

    telemetry = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "GpuTelemetry",
        "metadata": {"name": "ml", "namespace": ns},
        "spec": {"selector": {"podSelector": {"matchLabels": {"team": "ml"}}},
                 "source": {"dcgmExporter": {"port": port}}, "interval": "1s"},
    }  # fmt: skip
    real_node.plane.kubectl("apply", "-f", "-", input=json.dumps(telemetry))

    def rows() -> dict[str, Any] | None:
        st = _status(real_node, ns, "ml", kind="gput")
        return st if st.get("pods") and st.get("phase") == "Running" else None

    status = wait_for(rows, what="a GPU row for the trainer pod")
    (node_entry,) = status["nodes"]
    # The kubelet's real pod-resources socket answered: no degraded source.
    assert (node_entry["node"], node_entry["state"], node_entry.get("message", "")) == (
        real_node.name, "Running", "",
    )  # fmt: skip
    (row,) = status["pods"]
    assert (row["namespace"], row["pod"], row["container"], row["node"]) == (
        ns, "trainer", "app", real_node.name,
    )  # fmt: skip
    (reading,) = row["gpus"]
    assert (reading["uuid"], reading["utilizationPercent"]) == (gpu_uuid(0), 87)
    assert reading["memoryUsedBytes"] == 60000 * 2**20
    agent = orb8.agent_pod()
    mounts = {m["mountPath"] for m in agent["spec"]["containers"][0]["volumeMounts"]}
    assert "/var/lib/kubelet/pod-resources" in mounts
    sock = real_node.pod_resources_socket
    assert sock.is_socket()


def test_helm_uninstall_leaves_no_object_probe_or_file(
    real_node: LocalNode, orb8: Orb8Release
) -> None:
    """Last in the module: removes the release."""
    ns = _namespace(real_node)
    server = _run(real_node, ns, "server", labels=WEB, command=SINK)
    _session(real_node, ns, "web", selector=WEB)
    _attached(real_node, ns, "web", [server])
    agent_pid = nodepods.container_pids(node=real_node, pod=_agent(real_node, orb8),
                                        container="agent")[0]  # fmt: skip
    # Users delete their sessions, then uninstall.
    for kind in ("tracesessions", "gputelemetries"):
        real_node.plane.kubectl("delete", kind, "--all", "--all-namespaces", "--timeout=120s",
                                timeout=150)  # fmt: skip
    release.uninstall(release=orb8)

    plane = real_node.plane
    leftovers = plane.kubectl(
        "get", "all,serviceaccounts,configmaps,roles,rolebindings", "-n", orb8.namespace,
        "-l", f"app.kubernetes.io/instance={orb8.name}", "-o", "name",
    ).stdout.split()  # fmt: skip
    cluster_wide = plane.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", f"app.kubernetes.io/instance={orb8.name}",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    assert leftovers == [] and cluster_wide == []
    assert plane.kubectl("get", "nodeagentconfigs", "-o", "name").stdout.split() == []
    # No probe: no orb8 filter on any of the node's pod veths, no program
    # loaded by the agent, no agent process.
    veths = [v for v in Path(f"/sys/class/net/{real_node.network.bridge}/brif").iterdir()]
    assert veths
    assert [v.name for v in veths if nodepods.orb8_tc_filters(interface=v.name)] == []
    assert not Path(f"/proc/{agent_pid}").exists()
    # No file: the agent's per-node state under the host's /run/orb8 is gone.
    assert not Path(f"/run/orb8/agent-{real_node.name}").exists()
