"""The agent's reconciler with the real flow probe and two filtered sessions on one pod.

Namespace B plays the pod (its container's cgroup holds a process), ``if_a``
is its host-side veth. Session "dns" counts port 5300 only, session "extra"
counts only the peer 10.n.m.200. The kernel gets the union of the two on the
veth, each session's rows hold only its own traffic with the bytes nft
counted, and traffic neither asked for is in no session and in no flow map.
A third session without a filter turns the kernel filter off for the pod;
the two filtered sessions still get only their own flows.
"""

from __future__ import annotations

import secrets

import pytest

from orb8_agent.control.agent import NodeAgent
from orb8_agent.control.kernel import KernelDataPlane
from orb8_agent.control.served import Served
from orb8_agent.control.veth import HostVeth
from orb8_agent.dataplane import tc
from orb8_agent.dataplane.probes import ProbeSet
from orb8_common.models import NodeAgentConfigSpec, SessionReport, parse_trace_session_spec
from orb8_dev import cgroups, netns
from orb8_dev.nftcount import ETH_HLEN, ingress_counters
from orb8_dev.traffic_ctl import finish_sink, start_sink, traffic, warm_neighbours

pytestmark = pytest.mark.kernel


def _uid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _served(
    *, pod: dict[str, object], filters: dict[str, dict[str, object] | None]
) -> list[Served]:
    config = NodeAgentConfigSpec.model_validate(
        {
            "nodeName": "node-a",
            "sessions": [
                {
                    "uid": uid,
                    "kind": "TraceSession",
                    "namespace": "shop",
                    "name": uid,
                    "pods": [pod],
                }
                for uid in filters
            ],
        }
    )
    served = []
    for session in config.sessions:
        network: dict[str, object] = {"enabled": True, "tcpHealth": False, "topFlows": 50}
        if filters[session.uid] is not None:
            network["filter"] = filters[session.uid]
        spec = parse_trace_session_spec({"probes": {"network": network}})
        served.append(Served(session=session, spec=spec))
    return served


def _send(pair: netns.VethPair, dst: str, port: int, count: int) -> None:
    sink = start_sink(pair.ns_a, "udp-sink", "--bind", dst, "--port", str(port), "--duration", "1")
    sent = traffic(
        pair.ns_b, "udp-send", "--dst", dst, "--port", str(port), "--size", "100",
        "--count", str(count),
    )  # fmt: skip
    finish_sink(sink)
    assert sent["sent"] == count


def _rows(reports: list[SessionReport]) -> dict[str, set[tuple[str, int, int, int]]]:
    """session → {(destination ip, destination port, bytes, packets)}."""
    found: dict[str, set[tuple[str, int, int, int]]] = {}
    for report in reports:
        assert report.trace is not None
        found[report.name] = {
            (row.destination.ip, row.destination.port or 0, row.bytes, row.packets)
            for row in report.trace.flows
        }
    return found


def test_two_filtered_sessions_on_one_pod(pair: netns.VethPair, flow_probes: ProbeSet) -> None:
    flows = flow_probes.flows
    assert flows is not None
    extra = pair.ip4_a.rsplit(".", 1)[0] + ".200"
    netns.run(["ip", "addr", "add", f"{extra}/24", "dev", pair.if_a], netns=pair.ns_a)
    warm_neighbours(pair)
    assert traffic(pair.ns_b, "icmp", "--dst", extra, "--count", "1")["replies"] == 1
    with netns.enter(pair.ns_a):
        host_veth = HostVeth(ifindex=tc.ifindex_of(interface=pair.if_a), name=pair.if_a)
    uid, cid = _uid(), secrets.token_hex(32)
    pod: dict[str, object] = {
        "uid": uid, "namespace": "shop", "name": "client", "ips": [pair.ip4_b],
        "containers": [{"name": "app", "id": f"containerd://{cid}"}],
    }  # fmt: skip
    with cgroups.cgroup(relative=f"kubepods/besteffort/pod{uid}/{cid}") as cg:
        sleeper = cg.spawn(["sleep", "600"], enter=["ip", "netns", "exec", pair.ns_b])
        try:
            root = cg.path.parents[3]
            agent = NodeAgent(
                node="node-a", dataplane=KernelDataPlane(probes=flow_probes), cgroup_root=root,
                veth_resolver=lambda pid: host_veth,
            )  # fmt: skip
            filters: dict[str, dict[str, object] | None] = {
                "dns": {"ports": [5300]}, "extra": {"cidrs": [f"{extra}/32"]},
            }  # fmt: skip
            with netns.enter(pair.ns_a):
                agent.configure(sessions=_served(pod=pod, filters=filters))
                assert list(flows.filters) == [host_veth.ifindex]
                held = flows.filters[host_veth.ifindex]
                assert set(held.ports) == {5300}
                assert [str(n) for n in held.cidrs] == [f"{extra}/32"]
                agent.collect()  # start from empty accumulators and maps
                filtered_before = flows.stats().filtered
            rules = {
                "p5300": f"ip daddr {pair.ip4_a} udp dport 5300",
                "x5301": f"ip daddr {extra} udp dport 5301",
                "neither": f"ip daddr {pair.ip4_a} udp dport 5302",
            }
            with ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=rules) as counted:
                _send(pair, pair.ip4_a, 5300, 100)
                _send(pair, extra, 5301, 70)
                _send(pair, pair.ip4_a, 5302, 40)
                with netns.enter(pair.ns_a):
                    agent.collect()
                    rows = _rows(agent.reports())
                    filtered = flows.stats().filtered - filtered_before
                oracle = counted()

            def row(name: str, dst: str, port: int) -> tuple[str, int, int, int]:
                packets, nbytes = oracle[name]
                return (dst, port, nbytes + ETH_HLEN * packets, packets)

            assert oracle["neither"][0] == 40
            assert rows["dns"] == {row("p5300", pair.ip4_a, 5300)}
            assert rows["extra"] == {row("x5301", extra, 5301)}
            # what neither session asked for never reached a flow map
            assert filtered >= 40

            # a session without a filter: the pod's veth counts everything again,
            # and the filtered sessions still get only their own flows
            filters["all"] = None
            with netns.enter(pair.ns_a):
                agent.configure(sessions=_served(pod=pod, filters=filters))
                assert flows.filters == {}
            with ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=rules) as counted:
                _send(pair, pair.ip4_a, 5300, 30)
                _send(pair, pair.ip4_a, 5302, 20)
                with netns.enter(pair.ns_a):
                    agent.collect()
                    later = _rows(agent.reports())
                oracle = counted()
            # (a new sender socket: a new flow next to the first one)
            assert later["dns"] == rows["dns"] | {row("p5300", pair.ip4_a, 5300)}
            assert later["extra"] == rows["extra"]
            assert {(r[0], r[1], r[3]) for r in later["all"]} >= {
                (pair.ip4_a, 5300, 30), (pair.ip4_a, 5302, 20),
            }  # fmt: skip
            with netns.enter(pair.ns_a):
                agent.shutdown()
        finally:
            sleeper.kill()
            sleeper.wait()
