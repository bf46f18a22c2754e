"""The flow probe on a real veth pair: counts match the kernel's own counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orb8_agent.dataplane.abi import TCP_FIN, TCP_SYN
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Flow
from orb8_dev import netns
from orb8_dev.traffic import CRAFTED_DST_IP4, CRAFTED_SRC_IP4
from orb8_dev.traffic_ctl import finish_sink, start_sink, traffic, warm_neighbours

pytestmark = pytest.mark.kernel

ETH = 14
IPV4 = 20
IPV6 = 40
UDP = 8


@pytest.fixture
def collector(pair: netns.VethPair, run_dir: Path, agent_id: str) -> Iterator[FlowCollector]:
    with netns.enter(pair.ns_a):
        c = FlowCollector(agent_id=agent_id, run_dir=run_dir)
        c.open()
        try:
            warm_neighbours(pair)
            c.attach(interface=pair.if_a)
            c.read_flows()  # start from an empty map
            yield c
        finally:
            c.close()


def _sum(flows: list[Flow], direction: str) -> tuple[int, int]:
    sel = [f for f in flows if f.direction == direction]
    return sum(f.bytes for f in sel), sum(f.packets for f in sel)


def _one(flows: list[Flow], **match: object) -> Flow:
    found = [f for f in flows if all(getattr(f, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one flow matching {match}, got {found}"
    return found[0]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_tcp_bulk_matches_interface_counters(
    pair: netns.VethPair, collector: FlowCollector, v6: bool
) -> None:
    dst, src = (pair.ip6_b, pair.ip6_a) if v6 else (pair.ip4_b, pair.ip4_a)
    before = pair.counters(side="a")
    sink = start_sink(pair.ns_b, "tcp-sink", "--bind", dst, "--port", "5201")
    sent = traffic(pair.ns_a, "tcp-send", "--dst", dst, "--port", "5201", "--bytes", str(40 << 20))
    received = finish_sink(sink)
    with netns.enter(pair.ns_a):
        flows = collector.read_flows()
    after = pair.counters(side="a")
    assert received["received"] == sent["sent"] == 40 << 20

    tx_bytes = after["tx_bytes"] - before["tx_bytes"]
    rx_bytes = after["rx_bytes"] - before["rx_bytes"]
    tx_packets = after["tx_packets"] - before["tx_packets"]
    rx_packets = after["rx_packets"] - before["rx_packets"]
    eg_bytes, eg_packets = _sum(flows, "egress")
    in_bytes, in_packets = _sum(flows, "ingress")
    assert eg_bytes == pytest.approx(tx_bytes, rel=0.01)
    assert in_bytes == pytest.approx(rx_bytes, rel=0.01)
    assert eg_packets == pytest.approx(tx_packets, rel=0.01, abs=2)
    assert in_packets == pytest.approx(rx_packets, rel=0.01, abs=2)

    out = _one(flows, protocol=6, direction="egress", dst_port=5201, src_ip=src)
    back = _one(flows, protocol=6, direction="ingress", src_port=5201, dst_ip=src)
    # The data flow is all of the veth's transmit; how the kernel segmented the
    # stream (and so the header overhead) varies with load, so the payload is only a floor.
    assert out.bytes == pytest.approx(tx_bytes, rel=0.01)
    assert out.bytes >= sent["sent"]
    assert back.src_ip == dst and back.dst_port == out.src_port
    assert out.tcp_flags & TCP_SYN and out.tcp_flags & TCP_FIN
    assert back.tcp_flags & TCP_SYN and back.tcp_flags & TCP_FIN
    assert out.ifindex == back.ifindex > 0
    assert out.first_seen_ns <= out.last_seen_ns


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_exact_bytes_and_packets(
    pair: netns.VethPair, collector: FlowCollector, v6: bool
) -> None:
    dst, src = (pair.ip6_b, pair.ip6_a) if v6 else (pair.ip4_b, pair.ip4_a)
    sink = start_sink(pair.ns_b, "udp-sink", "--bind", dst, "--port", "5300", "--duration", "1.5")
    sent = traffic(
        pair.ns_a, "udp-send", "--dst", dst, "--port", "5300", "--size", "100", "--count", "300"
    )
    got = finish_sink(sink)
    with netns.enter(pair.ns_a):
        flows = collector.read_flows()
    assert sent["sent"] == 300
    flow = _one(flows, protocol=17, direction="egress", dst_port=5300, src_ip=src)
    assert flow.dst_ip == dst
    assert flow.packets == 300
    assert flow.bytes == 300 * (ETH + (IPV6 if v6 else IPV4) + UDP + 100)
    # the sink may drop datagrams under load; the wire saw all of them
    assert 0 < got["received"] <= 300


@pytest.mark.parametrize("v6", [False, True], ids=["icmp", "icmpv6"])
def test_icmp_echo_both_directions(
    pair: netns.VethPair, collector: FlowCollector, v6: bool
) -> None:
    dst, src = (pair.ip6_b, pair.ip6_a) if v6 else (pair.ip4_b, pair.ip4_a)
    result = traffic(pair.ns_a, "icmp", "--dst", dst, "--count", "4")
    with netns.enter(pair.ns_a):
        flows = collector.read_flows()
    assert result["replies"] == 4
    proto, request, reply = (58, 128, 129) if v6 else (1, 8, 0)
    out = _one(flows, protocol=proto, direction="egress", src_ip=src, dst_port=request << 8)
    back = _one(flows, protocol=proto, direction="ingress", dst_ip=src, dst_port=reply << 8)
    # type, code, checksum (4) + our 36-byte body (id, seq, payload)
    l3 = IPV6 if v6 else IPV4
    assert (out.packets, out.bytes) == (4, 4 * (ETH + l3 + 4 + 36))
    assert (back.packets, back.bytes) == (4, 4 * (ETH + l3 + 4 + 36))
    assert back.src_ip == dst


def test_malformed_frames_are_not_counted(pair: netns.VethPair, collector: FlowCollector) -> None:
    dst = pair.ip4_b
    with netns.enter(pair.ns_a):
        stats_before = collector.stats()
    first = traffic(
        pair.ns_a, "udp-send", "--dst", dst, "--port", "5400", "--size", "50", "--count", "40"
    )
    traffic(
        pair.ns_a,
        "raw",
        "--interface",
        pair.if_a,
        "--count",
        "5",
        "truncated-ipv4",
        "bad-ihl",
        "short-ipv6",
        "truncated-tcp",
        "non-ip",
    )
    second = traffic(
        pair.ns_a, "udp-send", "--dst", dst, "--port", "5400", "--size", "50", "--count", "40"
    )
    with netns.enter(pair.ns_a):
        flows = collector.read_flows()
        stats = collector.stats()
    udp = [f for f in flows if f.protocol == 17 and f.direction == "egress" and f.dst_port == 5400]
    sent = first["sent"] + second["sent"]
    assert sum(f.packets for f in udp) == sent >= 40
    assert sum(f.bytes for f in udp) == sent * (ETH + IPV4 + UDP + 50)
    # no flow was made up from the crafted frames
    bogus = [
        f
        for f in flows
        if {f.src_ip, f.dst_ip} & {CRAFTED_SRC_IP4, CRAFTED_DST_IP4}
        or (f.src_ip in ("0.0.0.0", "::") and f.dst_ip == "::")
    ]
    assert bogus == []
    egress = [f for f in flows if f.direction == "egress"]
    assert all(
        f.src_ip in (pair.ip4_a, pair.ip6_a) or f.src_ip.startswith(("fe80:", "::")) for f in egress
    ), egress
    assert stats.malformed - stats_before.malformed == 20  # 4 malformed kinds x 5
    assert stats.not_ip - stats_before.not_ip >= 5
    assert stats.map_full == 0


def test_detach_one_interface_keeps_the_probe_loaded(
    pair: netns.VethPair, collector: FlowCollector
) -> None:
    with netns.enter(pair.ns_a):
        collector.detach(interface=pair.if_a)
        assert collector.interfaces == []
    traffic(pair.ns_a, "udp-send", "--dst", pair.ip4_b, "--port", "5500", "--count", "10")
    with netns.enter(pair.ns_a):
        assert [f for f in collector.read_flows() if f.dst_port == 5500] == []
        collector.attach(interface=pair.if_a)
    sent = traffic(pair.ns_a, "udp-send", "--dst", pair.ip4_b, "--port", "5500", "--count", "10")
    with netns.enter(pair.ns_a):
        flows = collector.read_flows()
    assert _one(flows, dst_port=5500, direction="egress").packets == sent["sent"] > 0


def test_probe_on_a_pods_host_side_veth(kernel_ready: None, run_dir: Path, agent_id: str) -> None:
    """The agent's shape: the probe sits on the host end of each pod's veth."""
    with (
        netns.namespace("o8host") as host,
        netns.pod_network(host_ns=host, ip="10.77.0.2") as pod_a,
        netns.pod_network(host_ns=host, ip="10.77.0.3") as pod_b,
    ):
        # a bridge on the "host" joins the two pods, as a simple CNI would
        br = netns.unique("o8br")
        netns.run(["ip", "link", "add", br, "type", "bridge"], netns=host)
        for hif in (pod_a.host_if, pod_b.host_if):
            netns.run(["ip", "link", "set", hif, "master", br], netns=host)
        netns.run(["ip", "link", "set", br, "up"], netns=host)
        # resolve ARP first so no datagram waits in (or falls out of) the neighbour queue
        assert traffic(pod_a.netns, "icmp", "--dst", "10.77.0.3", "--count", "1")["replies"] == 1
        with netns.enter(host), FlowCollector(agent_id=agent_id, run_dir=run_dir) as c:
            c.attach(interface=pod_a.host_if)
            sent = traffic(
                pod_a.netns,
                "udp-send",
                "--dst",
                "10.77.0.3",
                "--port",
                "7000",
                "--size",
                "200",
                "--count",
                "50",
            )
            flows = c.read_flows()
        # seen from the host side, the pod's egress is the veth's ingress
        f = _one(flows, protocol=17, dst_port=7000)
        assert (f.src_ip, f.dst_ip, f.direction) == ("10.77.0.2", "10.77.0.3", "ingress")
        assert f.packets == sent["sent"] and f.bytes == sent["sent"] * (ETH + IPV4 + UDP + 200)
