"""The agent's reconciler with the real hostNetwork probe: two hostNetwork pods of one
session, laid out as kubelet's cgroupfs driver does, sharing one address; each flow
row names the right pod, the bytes match what nft counted at the peer, and the probe is
detached when the pods go away and when the agent shuts down."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orb8_agent.control.agent import NodeAgent
from orb8_agent.control.kernel import KernelDataPlane
from orb8_agent.control.served import Served
from orb8_agent.dataplane.probes import start_probes
from orb8_common.models import NodeAgentConfigSpec, parse_trace_session_spec
from orb8_dev import cgroups, netns
from orb8_dev.nftcount import ingress_counters
from orb8_dev.traffic_ctl import TRAFFIC, warm_neighbours

pytestmark = pytest.mark.kernel


def _uid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@pytest.fixture
def dataplane(kernel_ready: None, run_dir: Path, agent_id: str) -> Iterator[KernelDataPlane]:
    probes = start_probes(
        agent_id=agent_id, flows=False, syscalls=False, run_dir=run_dir, hostflows=True
    )
    assert probes.hostflows is not None, probes.failures
    plane = KernelDataPlane(probes=probes)
    try:
        yield plane
    finally:
        plane.close()


def _served(*, pods: list[tuple[str, str, str]], node_ip: str) -> list[Served]:
    spec = NodeAgentConfigSpec.model_validate(
        {
            "nodeName": "node-a",
            "sessions": [
                {
                    "uid": "s1", "kind": "TraceSession", "namespace": "infra", "name": "host",
                    "pods": [
                        {"uid": uid, "namespace": "infra", "name": name, "ips": [node_ip],
                         "hostNetwork": True,
                         "containers": [{"name": "app", "id": f"containerd://{cid}"}]}
                        for uid, name, cid in pods
                    ],
                }
            ],
        }
    )  # fmt: skip
    settings = parse_trace_session_spec(
        {
            "probes": {
                "network": {"enabled": True, "topFlows": 10, "tcpHealth": False},
                "syscalls": {"enabled": False},
            }
        }
    )
    return [Served(session=s, spec=settings) for s in spec.sessions]


def _send(cg: cgroups.Cgroup, ns: str, *args: str) -> None:
    proc = cg.spawn(
        [*TRAFFIC, *args],
        enter=["ip", "netns", "exec", ns],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


def _attached(path: Path) -> list[str]:
    out = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return sorted(str(p.get("name", "")) for p in json.loads(out.strip() or "[]"))


def test_two_hostnetwork_pods_are_attributed_by_cgroup(
    pair: netns.VethPair, dataplane: KernelDataPlane
) -> None:
    warm_neighbours(pair)
    uid_a, uid_b = _uid(), _uid()
    cid_a, cid_b = secrets.token_hex(32), secrets.token_hex(32)
    with cgroups.cgroup(relative=f"kubepods/besteffort/pod{uid_a}/{cid_a}") as ca:
        root = ca.path.parents[3]  # the test's stand-in for the cgroup v2 root
        cb = cgroups.Cgroup(path=root / f"kubepods/besteffort/pod{uid_b}/{cid_b}")
        cb.path.mkdir(parents=True)
        agent = NodeAgent(node="node-a", dataplane=dataplane, cgroup_root=root)
        agent.configure(
            sessions=_served(
                pods=[(uid_a, "host-a", cid_a), (uid_b, "host-b", cid_b)], node_ip=pair.ip4_a
            )
        )
        assert set(agent.attached_cgroups) == {ca.path.parent, cb.path.parent}
        assert all(len(_attached(p)) == 2 for p in agent.attached_cgroups)

        sink = subprocess.Popen(
            ["ip", "netns", "exec", pair.ns_b, *TRAFFIC, "udp-sink", "--bind", pair.ip4_b,
             "--port", "5401", "--duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # the oracle: what reached the peer from each pod's socket (the sizes tell the
        # two pods apart), counted by nft on the peer's ingress; IPv6 router
        # solicitations and MLD reports of the fresh veth cross it too, uncounted
        rules = {
            "a": f"ip saddr {pair.ip4_a} udp dport 5401 udp length {8 + 500}",
            "b": f"ip saddr {pair.ip4_a} udp dport 5401 udp length {8 + 900}",
        }
        try:
            assert sink.stdout is not None and '"listening"' in sink.stdout.readline()
            with ingress_counters(netns=pair.ns_b, interface=pair.if_b, rules=rules) as counted:
                _send(ca, pair.ns_a, "udp-send", "--dst", pair.ip4_b, "--port", "5401",
                      "--size", "500", "--count", "200")  # fmt: skip
                _send(cb, pair.ns_a, "udp-send", "--dst", pair.ip4_b, "--port", "5401",
                      "--size", "900", "--count", "120")  # fmt: skip
                oracle = counted()
        finally:
            sink.kill()
            sink.communicate()
        agent.collect()
        (report,) = agent.reports()
        entry = report.trace
        assert entry is not None and entry.state == "Running", entry
        assert "hostflows" in entry.probes
        by_pod: dict[str, int] = {}
        for row in entry.flows:
            assert row.destination.pod == "" and row.source.ip == pair.ip4_a
            by_pod[row.source.pod] = by_pod.get(row.source.pod, 0) + row.bytes
        assert oracle == {"a": (200, 200 * (20 + 8 + 500)), "b": (120, 120 * (20 + 8 + 900))}
        assert by_pod == {"host-a": oracle["a"][1], "host-b": oracle["b"][1]}
        assert (entry.packets, entry.bytes) == (320, oracle["a"][1] + oracle["b"][1])

        # pod B goes away: its cgroup is detached, A's stays
        agent.configure(sessions=_served(pods=[(uid_a, "host-a", cid_a)], node_ip=pair.ip4_a))
        assert set(agent.attached_cgroups) == {ca.path.parent}
        assert _attached(cb.path.parent) == []
        agent.shutdown()
        assert agent.attached_cgroups == {}
        assert _attached(ca.path.parent) == []
