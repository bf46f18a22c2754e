"""Services and hostNetwork pods on the real node, with orb8 installed by Helm.

* A client pod talks to a ClusterIP Service (kube-proxy, nftables mode, DNATs
  it); the session's flows name the Service and the backend pod, and the
  bytes match the client's host veth counters.
* Two hostNetwork pods, both on the node's address, each send to a sink pod;
  each one's flows are attributed to it (cgroup_skb on its pod cgroup), with
  the sink's host veth counters as the oracle.
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
from orb8_dev.node import LocalNode
from orb8_dev.nodepods import RunningPod
from orb8_dev.release import Orb8Release

pytestmark = pytest.mark.timeout(1800)

SINK = "nc -ll -p 8080 -e orb8-sink & " + nodepods.IDLE
ETH = 14


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
    if not real_node.kube_proxy:
        pytest.fail("the real node runs without kube-proxy: another local node on this host "
                    "holds it (orb8_dev/kubeproxy.py); stop that node and rerun")  # fmt: skip
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
    name = f"orb8-svc-{secrets.token_hex(3)}"
    nodepods.create_namespace(node=node, name=name)
    return name


def _run(node: LocalNode, ns: str, name: str, *, labels: dict[str, str], command: str,
         host_network: bool = False) -> RunningPod:  # fmt: skip
    nodepods.apply(
        node=node,
        manifest=nodepods.app_pod(
            name=name, namespace=ns, labels=labels, command=command, host_network=host_network
        ),
    )
    return nodepods.wait_running(node=node, namespace=ns, name=name)


def _session(node: LocalNode, ns: str, name: str, *, selector: dict[str, str]) -> None:
    session = {
        "apiVersion": "orb8.io/v1alpha1",
        "kind": "TraceSession",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"podSelector": {"matchLabels": selector}},
            "probes": {"network": {"enabled": True, "topFlows": 50},
                       "syscalls": {"enabled": False}},
            "duration": "30m",
            "reportInterval": "2s",
        },
    }  # fmt: skip
    node.plane.kubectl("apply", "-f", "-", input=json.dumps(session))


def _status(node: LocalNode, ns: str, name: str) -> dict[str, Any]:
    out = node.plane.kubectl("get", "ts", name, "-n", ns, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def _running(node: LocalNode, ns: str, name: str) -> bool:
    nodes = _status(node, ns, name).get("nodes") or []
    return any(n.get("state") == "Running" for n in nodes)


def _counters(interface: str) -> dict[str, int]:
    base = Path(f"/sys/class/net/{interface}/statistics")
    return {k: int((base / k).read_text()) for k in ("rx_bytes", "rx_packets", "tx_bytes",
                                                     "tx_packets")}  # fmt: skip


def test_a_flow_to_a_cluster_ip_names_the_service_and_the_backend(
    real_node: LocalNode, orb8: Orb8Release
) -> None:
    ns = _namespace(real_node)
    # two backends: only the node's conntrack entry can say which one a connection
    # went to (with one, the Service's only endpoint would name it)
    servers = {
        pod.ip: pod
        for pod in (_run(real_node, ns, name, labels={"app": "cart"}, command=SINK)
                    for name in ("server-1", "server-2"))
    }  # fmt: skip
    client = _run(real_node, ns, "client", labels={"role": "client"}, command=nodepods.IDLE)
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "cart", "namespace": ns},
        "spec": {"selector": {"app": "cart"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }  # fmt: skip
    real_node.plane.kubectl("apply", "-f", "-", input=json.dumps(service))
    cluster_ip = real_node.plane.kubectl(
        "get", "svc", "cart", "-n", ns, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout.strip()
    _session(real_node, ns, "svc", selector={"role": "client"})
    wait_for(lambda: _running(real_node, ns, "svc"), what="the session Running on the node")
    veth = nodepods.host_veth(node=real_node, pod=client)
    wait_for(lambda: nodepods.orb8_tc_filters(interface=veth), what=f"orb8 filters on {veth}")

    # kube-proxy programs the Service once its EndpointSlice lists the server
    def reachable() -> bool:
        out = real_node.plane.kubectl(
            "exec", "client", "-n", ns, "-c", "app", "--", "sh", "-c",
            f"echo x | nc -w 2 {cluster_ip} 80 && echo ok", check=False, timeout=30,
        )  # fmt: skip
        return out.returncode == 0 and "ok" in out.stdout

    wait_for(reachable, what=f"{cluster_ip}:80 reachable through kube-proxy")
    before = _counters(veth)
    nodepods.exec_in(
        node=real_node, pod=client,
        command=f"dd if=/dev/zero bs=1000 count=3000 2>/dev/null | nc {cluster_ip} 80",
    )  # fmt: skip
    after = _counters(veth)
    # tc ingress on the host veth is the client's egress; the veth counts Ethernet too
    sent = after["rx_bytes"] - before["rx_bytes"]
    assert sent > 3_000_000

    def to_service() -> list[dict[str, Any]]:
        rows = [f for f in _status(real_node, ns, "svc").get("flows") or []
                if f.get("service") == f"{ns}/cart:80"
                and f["source"].get("pod") == "client"]  # fmt: skip
        total = sum(f["bytes"] for f in rows)
        return rows if abs(total - sent) <= 0.01 * sent else []

    rows = wait_for(to_service, what=f"client→{ns}/cart:80 within 1% of the veth's {sent}")
    for row in rows:
        # the client's veth sees the ClusterIP (DNAT happens in the host, after it)
        assert row["destination"]["ip"] == cluster_ip and row["destination"]["port"] == 80
    big = max(rows, key=lambda r: r["bytes"])
    backend = big.get("backend")
    assert backend is not None, big
    chosen = servers[backend["ip"]]
    assert backend == {"namespace": ns, "pod": chosen.name, "ip": chosen.ip, "port": 8080}


def test_two_hostnetwork_pods_are_told_apart(real_node: LocalNode, orb8: Orb8Release) -> None:
    ns = _namespace(real_node)
    sink = _run(real_node, ns, "sink", labels={"role": "sink"}, command=SINK)
    pods = [
        _run(real_node, ns, name, labels={"role": "host"}, command=nodepods.IDLE,
             host_network=True)
        for name in ("host-a", "host-b")
    ]  # fmt: skip
    assert pods[0].ip == pods[1].ip == real_node.network.node_ip
    _session(real_node, ns, "host", selector={"role": "host"})
    wait_for(lambda: _running(real_node, ns, "host"), what="the session Running on the node")
    veth = nodepods.host_veth(node=real_node, pod=sink)
    sent: dict[str, int] = {}
    for pod, count in zip(pods, (2000, 3500), strict=True):
        before = _counters(veth)
        nodepods.exec_in(
            node=real_node, pod=pod,
            command=f"dd if=/dev/zero bs=1000 count={count} 2>/dev/null | nc {sink.ip} 8080",
        )  # fmt: skip
        after = _counters(veth)
        # toward the sink = the host side's transmit; IP bytes = less the Ethernet headers
        packets = after["tx_packets"] - before["tx_packets"]
        sent[pod.name] = after["tx_bytes"] - before["tx_bytes"] - ETH * packets

    def attributed() -> dict[str, int]:
        by_pod: dict[str, int] = {}
        for f in _status(real_node, ns, "host").get("flows") or []:
            if f["destination"].get("ip") == sink.ip and f["destination"].get("port") == 8080:
                name = f["source"].get("pod", "")
                by_pod[name] = by_pod.get(name, 0) + f["bytes"]
        ok = set(by_pod) == set(sent) and all(
            abs(by_pod[name] - sent[name]) <= 0.01 * sent[name] for name in sent
        )
        return by_pod if ok else {}

    got = wait_for(attributed, what=f"each hostNetwork pod's bytes within 1% of {sent}")
    assert set(got) == {"host-a", "host-b"}
