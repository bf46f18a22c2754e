"""Flow filters without the kernel: the semantics, the per-interface union the
kernel gets, and each session keeping only its own flows."""

from __future__ import annotations

import pytest

from orb8_agent.control.flowfilters import kernel_filters
from orb8_agent.control.flows import FlowRouter
from orb8_agent.control.served import Served
from orb8_agent.control.tcphealth import TcpHealthRouter
from orb8_agent.dataplane.abi import FILTER_CLAUSES
from orb8_agent.dataplane.flowfilter import compile_filter
from orb8_agent.dataplane.models import Flow, TcpHealth
from orb8_common.models import FlowFilter, NodeAgentConfigSpec, parse_trace_session_spec

PROTO = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58}
POD_IP = "10.0.0.2"


def _obs(src: str, sport: int, dst: str, dport: int, proto: str, hook: str) -> Flow:
    return Flow(src, dst, sport, dport, PROTO[proto], hook, 12, 100, 1, 0, 0, 0)


def _served(filters: dict[str, dict[str, object] | None]) -> list[Served]:
    """One session per entry, each tracing the pod 'bbbb' (ip POD_IP) with that filter."""
    pod = {"uid": "bbbb", "namespace": "shop", "name": "server", "ips": [POD_IP]}
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
        network: dict[str, object] = {"enabled": True}
        if filters[session.uid] is not None:
            network["filter"] = filters[session.uid]
        spec = parse_trace_session_spec({"probes": {"network": network}})
        served.append(Served(session=session, spec=spec))
    return served


@pytest.mark.parametrize(
    ("flt", "protocol", "ports", "peer", "expected"),
    [
        ({}, "ICMP", (0, 2048), "1.2.3.4", True),  # an empty filter takes everything
        ({"ports": [53]}, "UDP", (40000, 53), "1.2.3.4", True),
        ({"ports": [53]}, "TCP", (53, 40000), "1.2.3.4", True),  # source port counts too
        ({"ports": [53]}, "UDP", (40000, 54), "1.2.3.4", False),
        ({"ports": [2048]}, "ICMP", (0, 2048), "1.2.3.4", False),  # ICMP never has a port
        ({"ports": [53]}, "UDP", (0, 0), "1.2.3.4", False),  # later fragment: no ports
        ({"cidrs": ["10.0.0.0/8"]}, "ICMP", (0, 2048), "10.9.9.9", True),
        ({"cidrs": ["10.0.0.0/8"]}, "TCP", (1, 2), "11.0.0.1", False),
        ({"cidrs": ["10.0.0.0/8"]}, "TCP", (1, 2), "fd00::1", False),  # other family
        ({"cidrs": ["fd00::/8"]}, "TCP", (1, 2), "fd00::1", True),
        ({"ports": [80], "cidrs": ["10.0.0.0/8"]}, "TCP", (80, 1), "10.0.0.1", True),
        ({"ports": [80], "cidrs": ["10.0.0.0/8"]}, "TCP", (81, 1), "10.0.0.1", False),
        ({"ports": [80], "cidrs": ["10.0.0.0/8"]}, "TCP", (80, 1), "192.168.0.1", False),
    ],
)
def test_filter_semantics(
    flt: dict[str, object], protocol: str, ports: tuple[int, int], peer: str, expected: bool
) -> None:
    assert FlowFilter.model_validate(flt).matches(
        protocol=protocol, ports=ports, peer_ip=peer
    ) is expected  # fmt: skip


def test_union_clauses_and_nested_cidrs() -> None:
    a = FlowFilter(ports=(5300,), cidrs=("10.0.0.0/24",))
    b = FlowFilter(ports=(5301, 5300), cidrs=("10.0.0.200/32", "fd00::/64"))
    c = FlowFilter(cidrs=("10.0.0.0/16",))
    compiled = compile_filter(filters=[a, b, a, c])  # a twice: one clause
    assert compiled is not None
    assert compile_filter(filters=[c, b, a]) == compiled  # the order does not matter
    # clauses in (ports, cidrs) order: c (no ports) = bit 0, a = bit 1, b = bit 2
    assert (compiled.any_port, compiled.any_peer) == (0b001, 0)
    assert dict(compiled.ports) == {5300: 0b110, 5301: 0b100}
    masks = {str(network): mask for network, mask in compiled.cidrs.items()}
    # each CIDR carries every clause whose CIDRs contain it: the longest match is enough
    assert masks == {
        "10.0.0.0/24": 0b011, "10.0.0.200/32": 0b111, "fd00::/64": 0b100, "10.0.0.0/16": 0b001,
    }  # fmt: skip


def test_anything_unfiltered_or_too_many_filters_counts_everything() -> None:
    assert compile_filter(filters=[]) is None
    assert compile_filter(filters=[FlowFilter(ports=(1,)), FlowFilter()]) is None
    many = [FlowFilter(ports=(p,)) for p in range(1, FILTER_CLAUSES + 2)]
    assert compile_filter(filters=many[:FILTER_CLAUSES]) is not None
    assert compile_filter(filters=many) is None


def test_kernel_filters_per_interface() -> None:
    served = _served({"s1": {"ports": [53]}, "s2": {"cidrs": ["10.1.0.0/16"]}})
    filters = kernel_filters(sessions=served, pod_by_ifindex={12: "bbbb", 13: "other"})
    assert list(filters) == [12]  # no session traces 'other': nothing to filter there
    assert filters[12] == compile_filter(
        filters=[FlowFilter(ports=(53,)), FlowFilter(cidrs=("10.1.0.0/16",))]
    )
    # one session on the pod without a filter: the interface counts everything
    served = _served({"s1": {"ports": [53]}, "s2": None})
    assert kernel_filters(sessions=served, pod_by_ifindex={12: "bbbb"}) == {}


def test_each_session_keeps_only_what_its_own_filter_takes() -> None:
    dns, subnet, everything = _served(
        {"dns": {"ports": [53]}, "subnet": {"cidrs": ["10.1.0.0/16"]}, "all": None}
    )
    router = FlowRouter(sessions=[dns, subnet, everything], pod_by_ifindex={12: "bbbb"})

    def who(obs: Flow) -> set[str]:
        return {s.uid for s in router.route(observation=obs)}

    # the pod queries 10.1.0.10:53 (tc ingress on its veth = the pod sent it)
    assert who(_obs(POD_IP, 40000, "10.1.0.10", 53, "UDP", "ingress")) == {"dns", "subnet", "all"}
    # the answer comes back: the peer is now the source
    assert who(_obs("10.1.0.10", 53, POD_IP, 40000, "UDP", "egress")) == {"dns", "subnet", "all"}
    assert who(_obs(POD_IP, 40000, "8.8.8.8", 53, "UDP", "ingress")) == {"dns", "all"}
    # the pod's own address is never the peer: a client in 10.9/16 talks to it
    assert who(_obs("10.9.0.1", 40000, POD_IP, 80, "TCP", "egress")) == {"all"}
    assert who(_obs("10.1.2.3", 40000, POD_IP, 80, "TCP", "egress")) == {"subnet", "all"}


def test_tcp_health_follows_the_sessions_filters() -> None:
    web, everything = _served({"web": {"ports": [443]}, "all": None})
    router = TcpHealthRouter(sessions=[web, everything], pod_by_netns={7: "bbbb"})

    def health(local_port: int, remote_port: int) -> TcpHealth:
        return TcpHealth(7, POD_IP, local_port, "1.2.3.4", remote_port, 1, 0, 0, 0, 0, 0)

    assert {s.uid for s in router.route(health=health(40000, 443))} == {"web", "all"}
    assert {s.uid for s in router.route(health=health(443, 40000))} == {"web", "all"}
    assert {s.uid for s in router.route(health=health(40000, 80))} == {"all"}
