"""Flow filters in the kernel, on a real veth pair, against nftables counters.

The probe sits on ``if_a`` (namespace A plays the host, B the pod), so what
B sends is tc ingress on ``if_a`` and its peer is the destination. Each test
sends traffic of classes the filter takes and classes it leaves out; nft
counters on the receiving interface measure each class; the flow rows must
hold exactly the taken classes, with the bytes and packets nft saw (plus the
Ethernet header nft does not count), and the left-out packets show up only
in the probe's ``filtered`` counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orb8_agent.dataplane import tc
from orb8_agent.dataplane.abi import FILTER_BITMAP_IFS, FILTER_CIDR4, FILTER_PORTS
from orb8_agent.dataplane.flowfilter import InterfaceFilter, compile_filter, entries
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Flow
from orb8_common.models import FlowFilter
from orb8_dev import netns
from orb8_dev.nftcount import ETH_HLEN, ingress_counters
from orb8_dev.traffic_ctl import finish_sink, start_sink, traffic, warm_neighbours

pytestmark = pytest.mark.kernel

EXTRA = 200  # last part of a second address on if_a: 10.n.m.200, fd00:n:m::200


@pytest.fixture
def pair(request: pytest.FixtureRequest, kernel_ready: None) -> Iterator[netns.VethPair]:
    """The veth pair; its probed side's ifindex has a bit in the kernel's "filtered?"
    bitmap, or with ``large-ifindex`` lies past it (then the gate and the hash decide)."""
    large = getattr(request, "param", "small-ifindex") == "large-ifindex"
    index_a = FILTER_BITMAP_IFS + 4321 if large else None
    with netns.veth_pair(index_a=index_a) as p:
        with netns.enter(p.ns_a):
            assert (tc.ifindex_of(interface=p.if_a) >= FILTER_BITMAP_IFS) == (index_a is not None)
        yield p


@pytest.fixture
def collector(pair: netns.VethPair, run_dir: Path, agent_id: str) -> Iterator[FlowCollector]:
    for ip, plen in ((_extra(pair, v6=False), 24), (_extra(pair, v6=True), 64)):
        netns.run(["ip", "addr", "add", f"{ip}/{plen}", "dev", pair.if_a, "nodad"], netns=pair.ns_a)
    warm_neighbours(pair)
    for ip in (_extra(pair, v6=False), _extra(pair, v6=True)):
        assert traffic(pair.ns_b, "icmp", "--dst", ip, "--count", "1")["replies"] == 1
    with netns.enter(pair.ns_a):
        c = FlowCollector(agent_id=agent_id, run_dir=run_dir)
        c.open()
        try:
            c.attach(interface=pair.if_a)
            yield c
        finally:
            c.close()


def _extra(pair: netns.VethPair, *, v6: bool) -> str:
    if v6:
        return pair.ip6_a.rsplit("::", 1)[0] + f"::{EXTRA}"
    return pair.ip4_a.rsplit(".", 1)[0] + f".{EXTRA}"


def _ifindex(pair: netns.VethPair) -> int:
    with netns.enter(pair.ns_a):
        return tc.ifindex_of(interface=pair.if_a)


def _set(c: FlowCollector, pair: netns.VethPair, *filters: FlowFilter) -> InterfaceFilter:
    compiled = compile_filter(filters=filters)
    assert compiled is not None
    with netns.enter(pair.ns_a):
        assert c.set_filters(filters={_ifindex(pair): compiled}) == {}
        c.read_flows()  # start from an empty map
    return compiled


def _send_udp(pair: netns.VethPair, dst: str, port: int, count: int) -> None:
    """B sends ``count`` 100-byte datagrams to dst:port, received by a sink there."""
    sink = start_sink(pair.ns_a, "udp-sink", "--bind", dst, "--port", str(port), "--duration", "1")
    sent = traffic(
        pair.ns_b, "udp-send", "--dst", dst, "--port", str(port), "--size", "100",
        "--count", str(count),
    )  # fmt: skip
    finish_sink(sink)
    assert sent["sent"] == count


def _rows(flows: list[Flow], *, dst: str, port: int) -> list[Flow]:
    return [f for f in flows if f.dst_ip == dst and f.dst_port == port and f.protocol == 17]


# A second session's filter that matches no test traffic: with it the interface's
# ports and IPv4 CIDRs no longer fit its own map entry and move to the port hash
# and the IPv4 LPM trie instead.
FILLER = FlowFilter(
    ports=tuple(range(6000, 6000 + FILTER_PORTS)),
    cidrs=tuple(f"192.0.2.{i}/32" for i in range(FILTER_CIDR4)),
)
SPILL = pytest.mark.parametrize("spill", [False, True], ids=["inline", "in-maps"])


def _held_in_maps(compiled: InterfaceFilter) -> tuple[bool, bool]:
    """Whether the ports and the IPv4 CIDRs went to their maps."""
    held = entries(ifindex=1, compiled=compiled)
    return bool(held.ports), bool(held.cidrs4)


def _family(v6: bool) -> str:
    return "ip6" if v6 else "ip"


# both ways the probe finds an interface's filter
IFINDEX_SIZES = pytest.mark.parametrize("pair", ["small-ifindex", "large-ifindex"], indirect=True)


@IFINDEX_SIZES
@SPILL
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_port_filter_counts_only_listed_ports(
    pair: netns.VethPair, collector: FlowCollector, v6: bool, spill: bool
) -> None:
    dst = pair.ip6_a if v6 else pair.ip4_a
    compiled = _set(collector, pair, FlowFilter(ports=(5300,)), *([FILLER] if spill else []))
    assert _held_in_maps(compiled) == (spill, False)
    with netns.enter(pair.ns_a):
        filtered_before = collector.stats().filtered
    rules = {"taken": "udp dport 5300", "left": "udp dport 5301"}
    with ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=rules) as counted:
        _send_udp(pair, dst, 5300, 200)
        _send_udp(pair, dst, 5301, 150)
        with netns.enter(pair.ns_a):
            flows = collector.read_flows()
            filtered = collector.stats().filtered - filtered_before
        oracle = counted()
    taken_packets, taken_bytes = oracle["taken"]
    left_packets, _ = oracle["left"]
    assert taken_packets == 200 and left_packets == 150
    [row] = _rows(flows, dst=dst, port=5300)
    assert (row.packets, row.bytes) == (taken_packets, taken_bytes + ETH_HLEN * taken_packets)
    assert row.direction == "ingress"
    # nothing else got in: no 5301 row, and no row without 5300 at either end
    assert _rows(flows, dst=dst, port=5301) == []
    assert all(5300 in (f.src_port, f.dst_port) and f.protocol in (6, 17) for f in flows)
    assert filtered >= left_packets


@SPILL
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_cidr_filter_counts_only_listed_peers(
    pair: netns.VethPair, collector: FlowCollector, v6: bool, spill: bool
) -> None:
    inside, outside = _extra(pair, v6=v6), (pair.ip6_a if v6 else pair.ip4_a)
    # a network around the extra address that leaves the first one out
    network = f"{inside.rsplit('::', 1)[0]}::200/125" if v6 else f"{inside[: -len('200')]}192/26"
    compiled = _set(collector, pair, FlowFilter(cidrs=(network,)), *([FILLER] if spill else []))
    assert _held_in_maps(compiled) == (False, spill and not v6)  # IPv6 CIDRs: always the trie
    fam = _family(v6)
    rules = {"taken": f"{fam} daddr {inside} udp dport 5300",
             "left": f"{fam} daddr {outside} udp dport 5300"}  # fmt: skip
    with ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=rules) as counted:
        _send_udp(pair, inside, 5300, 120)
        _send_udp(pair, outside, 5300, 80)
        with netns.enter(pair.ns_a):
            flows = collector.read_flows()
        oracle = counted()
    taken_packets, taken_bytes = oracle["taken"]
    assert taken_packets == 120 and oracle["left"][0] == 80
    [row] = _rows(flows, dst=inside, port=5300)
    assert (row.packets, row.bytes) == (taken_packets, taken_bytes + ETH_HLEN * taken_packets)
    assert _rows(flows, dst=outside, port=5300) == []
    # every row's peer (destination on ingress, source on egress) is inside the network
    assert all((f.dst_ip if f.direction == "ingress" else f.src_ip) == inside for f in flows)


@SPILL
def test_two_sessions_on_one_pod_get_the_union(
    pair: netns.VethPair, collector: FlowCollector, spill: bool
) -> None:
    """Session A: port 5300 to the /24; session B: port 5301 to the extra /32 only.

    The /32 lies inside A's /24: the kernel must still find A's clause for a
    5300 packet to the extra address (the longest CIDR match carries both).
    """
    subnet = pair.ip4_a.rsplit(".", 1)[0] + ".0/24"
    extra, first = _extra(pair, v6=False), pair.ip4_a
    session_a = FlowFilter(ports=(5300,), cidrs=(subnet,))
    session_b = FlowFilter(ports=(5301,), cidrs=(f"{extra}/32",))
    compiled = _set(collector, pair, session_a, session_b, *([FILLER] if spill else []))
    assert compiled.any_port == compiled.any_peer == 0
    assert _held_in_maps(compiled) == (spill, spill)
    rules = {
        "a": f"ip daddr {extra} udp dport 5300",
        "b": f"ip daddr {extra} udp dport 5301",
        "neither": f"ip daddr {first} udp dport 5301",
    }
    with ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=rules) as counted:
        _send_udp(pair, extra, 5300, 60)
        _send_udp(pair, extra, 5301, 70)
        _send_udp(pair, first, 5301, 90)
        with netns.enter(pair.ns_a):
            flows = collector.read_flows()
        oracle = counted()
    assert oracle["neither"][0] == 90
    for name, port in (("a", 5300), ("b", 5301)):
        packets, nbytes = oracle[name]
        [row] = _rows(flows, dst=extra, port=port)
        assert (row.packets, row.bytes) == (packets, nbytes + ETH_HLEN * packets)
    assert _rows(flows, dst=first, port=5301) == []


def test_tcp_port_filter_takes_both_directions(
    pair: netns.VethPair, collector: FlowCollector
) -> None:
    """A listed port matches as source or destination: the server's replies count too."""
    _set(collector, pair, FlowFilter(ports=(5201,)))
    dst = pair.ip4_a
    to_server = {"to": "tcp dport 5201"}
    from_server = {"from": "tcp sport 5201", "noise": "udp dport 5301"}
    with (
        ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=to_server) as at_a,
        ingress_counters(netns=pair.ns_b, interface=pair.if_b, rules=from_server) as at_b,
    ):
        sink = start_sink(pair.ns_a, "tcp-sink", "--bind", dst, "--port", "5201")
        traffic(pair.ns_b, "tcp-send", "--dst", dst, "--port", "5201", "--bytes", str(4 << 20))
        finish_sink(sink)
        _send_udp(pair, dst, 5301, 50)
        with netns.enter(pair.ns_a):
            flows = collector.read_flows()
        sent_to, sent_back = at_a()["to"], at_b()["from"]
    tcp = [f for f in flows if f.protocol == 6]
    [inbound] = [f for f in tcp if f.direction == "ingress" and f.dst_port == 5201]
    [outbound] = [f for f in tcp if f.direction == "egress" and f.src_port == 5201]
    assert (inbound.packets, inbound.bytes) == (sent_to[0], sent_to[1] + ETH_HLEN * sent_to[0])
    # what if_a sends is what if_b receives (a veth drops nothing on the way)
    assert (outbound.packets, outbound.bytes) == (
        sent_back[0],
        sent_back[1] + ETH_HLEN * sent_back[0],
    )
    assert not [f for f in flows if f.protocol == 17]


@IFINDEX_SIZES
def test_unfiltered_interface_and_removed_filter_count_everything(
    pair: netns.VethPair, collector: FlowCollector
) -> None:
    dst = pair.ip4_a
    only_5300 = compile_filter(filters=[FlowFilter(ports=(5300,))])
    assert only_5300 is not None
    # other interfaces' filters (ifindexes nothing here has, in and past the bitmap)
    # leave if_a alone
    with netns.enter(pair.ns_a):
        others = {_ifindex(pair) + 1: only_5300, FILTER_BITMAP_IFS + 99: only_5300}
        assert collector.set_filters(filters=others) == {}
        collector.read_flows()
    _send_udp(pair, dst, 5301, 40)
    with netns.enter(pair.ns_a):
        assert [r.packets for r in _rows(collector.read_flows(), dst=dst, port=5301)] == [40]
        # filter if_a, then take the filter away again
        assert collector.set_filters(filters={_ifindex(pair): only_5300}) == {}
    _send_udp(pair, dst, 5301, 30)
    with netns.enter(pair.ns_a):
        assert _rows(collector.read_flows(), dst=dst, port=5301) == []
        assert collector.set_filters(filters={}) == {}
        assert collector.filters == {}
    _send_udp(pair, dst, 5301, 20)
    with netns.enter(pair.ns_a):
        assert [r.packets for r in _rows(collector.read_flows(), dst=dst, port=5301)] == [20]
