"""The local real node runs real pods: scheduling, CNI, exec, logs, service
accounts, namespace deletion, and the cgroup layout the agent attributes by."""

from __future__ import annotations

import secrets
from pathlib import Path

from orb8_agent.control.containers import find_container_cgroups
from orb8_dev import nodepods
from orb8_dev.node import LocalNode


def _namespace(node: LocalNode) -> str:
    name = f"node-{secrets.token_hex(3)}"
    nodepods.create_namespace(node=node, name=name)
    return name


def test_pods_run_talk_and_reach_the_apiserver(real_node: LocalNode) -> None:
    ns = _namespace(real_node)
    server = nodepods.app_pod(
        name="server", namespace=ns, command="nc -l -p 8080 > /tmp/got; " + nodepods.IDLE
    )
    nodepods.apply(node=real_node, manifest=server)
    nodepods.apply(node=real_node, manifest=nodepods.app_pod(name="client", namespace=ns))
    srv = nodepods.wait_running(node=real_node, namespace=ns, name="server")
    cli = nodepods.wait_running(node=real_node, namespace=ns, name="client")
    assert srv.node == cli.node == real_node.name
    assert srv.ip != cli.ip

    nodepods.exec_in(
        node=real_node, pod=cli, command=f"echo hello-from-client | nc -w 5 {srv.ip} 8080"
    )
    got = nodepods.exec_in(node=real_node, pod=srv, command="cat /tmp/got").stdout
    assert got.strip() == "hello-from-client"

    # In-cluster config works without a kube-proxy: the Service IP is the apiserver.
    reach = nodepods.exec_in(
        node=real_node, pod=cli,
        command="echo | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT && echo ok; "
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace",
    ).stdout.split()  # fmt: skip
    assert reach == ["ok", ns]


def test_container_cgroups_match_what_the_agent_looks_for(real_node: LocalNode) -> None:
    ns = _namespace(real_node)
    nodepods.apply(node=real_node, manifest=nodepods.app_pod(name="p", namespace=ns))
    pod = nodepods.wait_running(node=real_node, namespace=ns, name="p")
    expected = nodepods.container_cgroup(node=real_node, pod=pod)
    pid = nodepods.container_pids(node=real_node, pod=pod)[0]
    # The container's own process is in that directory of the cgroup2 tree.
    assert (
        f"0::/{expected.relative_to(nodepods.UNIFIED)}" in Path(f"/proc/{pid}/cgroup").read_text()
    )

    found = find_container_cgroups(
        root=nodepods.UNIFIED / real_node.cgroup_parent.lstrip("/"),
        container_ids=[f"containerd://{pod.container_id()}"],
    )
    entry = found[pod.container_id()]
    assert (entry.pod_uid, entry.qos, entry.path) == (pod.uid, "BestEffort", expected)
    assert entry.cgroup_id == expected.stat().st_ino


def test_namespace_deletion_and_logs(real_node: LocalNode) -> None:
    ns = _namespace(real_node)
    nodepods.apply(
        node=real_node,
        manifest=nodepods.app_pod(name="talker", namespace=ns,
                                  command="echo started-$HOSTNAME; " + nodepods.IDLE),
    )  # fmt: skip
    nodepods.wait_running(node=real_node, namespace=ns, name="talker")
    logs = real_node.plane.kubectl("logs", "talker", "-n", ns).stdout
    assert logs.strip() == "started-talker"
    real_node.plane.kubectl("delete", "namespace", ns, "--timeout=120s", timeout=150)
    out = real_node.plane.kubectl("get", "namespace", ns, check=False)
    assert "NotFound" in out.stderr
