"""`make cluster-down` leaves the host as it found it.

Runs its own node (not the session's ``real_node``), so this module sorts
first in tests/node: when no other local node is up, stopping this one must
also restore the kernel settings and fixed host paths the kubelet, containerd
and the CNI bridge plugin changed.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from orb8_common.procfs import pid_alive
from orb8_dev import hoststate, node, nodepods

pytestmark = pytest.mark.node


def test_cluster_down_removes_everything_and_restores_host(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    others_up = hoststate.REGISTRY.is_dir() and any(hoststate.REGISTRY.glob("*.json"))
    before = hoststate.snapshot()
    local = node.up(state_dir=state_dir, progress=False)
    try:
        ns = f"down-{secrets.token_hex(3)}"
        nodepods.create_namespace(node=local, name=ns)
        for name in ("a", "b"):
            nodepods.apply(node=local, manifest=nodepods.app_pod(name=name, namespace=ns))
        pods = [nodepods.wait_running(node=local, namespace=ns, name=n) for n in ("a", "b")]
        # What the node made while it ran, to look for afterwards.
        veths = [nodepods.host_veth(node=local, pod=pod) for pod in pods]
        container_pids = [p for pod in pods for p in nodepods.container_pids(node=local, pod=pod)]
        during = hoststate.snapshot()
        node_pids = [
            int(p) for p in json.loads((state_dir / "node.json").read_text())["pids"].values()
        ]
        net = local.network
        assert {net.dummy, net.bridge, *veths} <= during.links
        assert any(str(state_dir) in m for m in during.mounts), "the node mounted nothing?"
        assert hoststate.cgroup_dirs(parent=net.cgroup_parent)
        if not others_up:
            # The bridge plugin turned on forwarding and the kubelet set its
            # kernel defaults: there is something to restore.
            assert during.sysctls != before.sysctls
    finally:
        node.down(state_dir=state_dir)
    after = hoststate.snapshot()

    assert not ({net.dummy, net.bridge, *veths} & after.links)
    assert [m for m in after.mounts if str(state_dir) in m] == []
    assert hoststate.cgroup_dirs(parent=net.cgroup_parent) == []
    assert [p for p in [*node_pids, *container_pids] if pid_alive(p)] == []
    assert hoststate.processes_mentioning(text=str(state_dir)) == []
    assert after.sysctls == before.sysctls
    assert after.paths == before.paths
    assert sorted(p.name for p in state_dir.iterdir()) == ["logs"]
