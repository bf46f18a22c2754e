"""Two real nodes: the session's node plus a worker in its own network
namespace (orb8_dev/worker.py), with orb8 installed by Helm on both.

A flow between pods on different nodes is seen by both agents; the operator
merges it into one row with both ends named, whose bytes match the sending
pod's host veth counter.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orb8_dev import nodepods, release
from orb8_dev.node import LocalNode
from orb8_dev.release import Orb8Release
from orb8_dev.worker import Worker, add_worker, remove_worker

pytestmark = pytest.mark.timeout(1800)
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
def worker(real_node: LocalNode) -> Iterator[Worker]:
    added = add_worker(node=real_node)
    try:
        yield added
    finally:
        remove_worker(state_dir=real_node.plane.state_dir)


@pytest.fixture(scope="module")
def orb8_both(
    real_node: LocalNode, worker: Worker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orb8Release]:
    installed = release.install(
        node=real_node, helm_home=tmp_path_factory.mktemp("helm"),
        archives=release.build_images(),
    )  # fmt: skip
    try:
        yield installed
    finally:
        release.uninstall(release=installed)


def test_pods_on_two_nodes_reach_each_other_and_the_apiserver(
    real_node: LocalNode, worker: Worker
) -> None:
    ns = f"two-{secrets.token_hex(3)}"
    nodepods.create_namespace(node=real_node, name=ns)
    for name, where, command in (("a", real_node.name, SINK), ("b", worker.name, nodepods.IDLE)):
        nodepods.apply(node=real_node, manifest=nodepods.app_pod(
            name=name, namespace=ns, node_name=where, command=command))  # fmt: skip
    a = nodepods.wait_running(node=real_node, namespace=ns, name="a")
    b = nodepods.wait_running(node=real_node, namespace=ns, name="b")
    assert (a.node, b.node) == (real_node.name, worker.name)
    out = nodepods.exec_in(
        node=real_node, pod=b,
        command=f"echo hi | nc {a.ip} 8080 && "
        "echo | nc -w 5 $KUBERNETES_SERVICE_HOST 443 && echo ok",
    ).stdout  # fmt: skip
    assert out.split() == ["ok"]
    nodes = json.loads(real_node.plane.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = {
        n["metadata"]["name"]: next(c["status"] for c in n["status"]["conditions"]
                                    if c["type"] == "Ready")
        for n in nodes
    }  # fmt: skip
    assert ready == {real_node.name: "True", worker.name: "True"}


def test_a_cross_node_flow_is_one_row_with_both_ends_named(
    real_node: LocalNode, worker: Worker, orb8_both: Orb8Release
) -> None:
    agents = [p for p in orb8_both.pods() if "agent" in p["metadata"]["name"]]
    assert sorted(p["spec"]["nodeName"] for p in agents) == sorted([real_node.name, worker.name])

    ns = f"two-{secrets.token_hex(3)}"
    nodepods.create_namespace(node=real_node, name=ns)
    web = {"tier": "web"}
    for name, where, command in (("server", real_node.name, SINK),
                                 ("client", worker.name, nodepods.IDLE)):  # fmt: skip
        nodepods.apply(node=real_node, manifest=nodepods.app_pod(
            name=name, namespace=ns, labels=web, node_name=where, command=command))  # fmt: skip
    server = nodepods.wait_running(node=real_node, namespace=ns, name="server")
    client = nodepods.wait_running(node=real_node, namespace=ns, name="client")
    session = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"podSelector": {"matchLabels": web}},
                 "probes": {"network": {"enabled": True}, "syscalls": {"enabled": True}},
                 "duration": "30m", "reportInterval": "2s"},
    }  # fmt: skip
    real_node.plane.kubectl("apply", "-f", "-", input=json.dumps(session))

    def status() -> dict[str, Any]:
        out = real_node.plane.kubectl("get", "ts", "web", "-n", ns, "-o", "json").stdout
        value: dict[str, Any] = json.loads(out).get("status") or {}
        return value

    server_veth = nodepods.host_veth(node=real_node, pod=server)
    client_veth = nodepods.host_veth(node=real_node, pod=client, netns=worker.netns)
    wait_for(
        lambda: (
            nodepods.orb8_tc_filters(interface=server_veth)
            and nodepods.orb8_tc_filters(interface=client_veth, netns=worker.netns)
            and len([n for n in status().get("nodes") or [] if n.get("state") == "Running"]) == 2
        ),
        what="both agents attached and reporting",
    )

    before = nodepods.rx_bytes(interface=client_veth, netns=worker.netns)
    nodepods.exec_in(
        node=real_node, pod=client,
        command=f"dd if=/dev/zero bs=1000 count=3000 2>/dev/null | nc {server.ip} 8080",
    )  # fmt: skip
    sent = nodepods.rx_bytes(interface=client_veth, netns=worker.netns) - before
    assert sent > 3_000_000

    def merged() -> list[dict[str, Any]]:
        rows = [
            f for f in status().get("flows") or []
            if f["destination"].get("port") == 8080 and f["source"].get("ip") == client.ip
        ]  # fmt: skip
        return rows if rows and abs(rows[0]["bytes"] - sent) <= 0.01 * sent else []

    (row,) = wait_for(merged, what=f"one client→server row within 1% of the veth's {sent} bytes")
    assert (row["source"]["namespace"], row["source"]["pod"]) == (ns, "client")
    dst = row["destination"]
    assert (dst["namespace"], dst["pod"], dst["ip"]) == (ns, "server", server.ip)
    # Both nodes saw it: each agent's own report (in its NodeAgentConfig) has the same 5-tuple.
    uid = json.loads(real_node.plane.kubectl("get", "ts", "web", "-n", ns, "-o", "json").stdout)[
        "metadata"
    ]["uid"]

    def reported_by(node: str) -> bool:
        out = real_node.plane.kubectl("get", "nac", node, "-o", "json").stdout
        reports = (json.loads(out).get("status") or {}).get("reports") or []
        flows = [f for r in reports if r["uid"] == uid for f in (r.get("trace") or {}).get(
            "flows") or []]  # fmt: skip
        return any(
            f["destination"].get("port") == 8080
            and f["source"].get("port") == row["source"]["port"]
            for f in flows
        )

    assert {n for n in (real_node.name, worker.name) if reported_by(n)} == {
        real_node.name,
        worker.name,
    }
