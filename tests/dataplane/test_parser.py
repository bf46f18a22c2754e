"""The flow parser on crafted packets, run in the kernel with BPF_PROG_TEST_RUN.

This reaches cases that are awkward to produce on a real link: IPv6
extension headers, fragments, VLAN tags, TCP options, truncations. The
kernel's test runner refuses packets shorter than their L3 header, so those
truncations are sent over a real veth in test_flows.py instead.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Flow, FlowStats

pytestmark = pytest.mark.kernel

TC_ACT_UNSPEC = 0xFFFFFFFF
MAC = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
SRC4, DST4 = "10.1.0.1", "10.1.0.2"
SRC6, DST6 = "fd00:1::1", "fd00:1::2"


def ipv4(
    proto: int, payload: bytes, *, frag: int = 0, ihl: int = 5, total: int | None = None
) -> bytes:
    options = b"\x01" * ((ihl - 5) * 4)
    length = total if total is not None else ihl * 4 + len(payload)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        length,
        7,
        frag,
        64,
        proto,
        0,
        socket.inet_aton(SRC4),
        socket.inet_aton(DST4),
    )
    return MAC + b"\x08\x00" + hdr + options + payload


def ipv6(next_hdr: int, payload: bytes) -> bytes:
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(payload),
        next_hdr,
        64,
        socket.inet_pton(socket.AF_INET6, SRC6),
        socket.inet_pton(socket.AF_INET6, DST6),
    )
    return MAC + b"\x86\xdd" + hdr + payload


def tcp(flags: int, *, doff: int = 5) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, doff << 4, flags, 65535, 0, 0) + (
        b"\x01" * ((doff - 5) * 4)
    )


def udp() -> bytes:
    return struct.pack("!HHHH", 5353, 53, 8 + 4, 0) + b"abcd"


@pytest.fixture
def runner(kernel_ready: None, tmp_path: Path) -> Iterator[tuple[FlowCollector, dict[str, int]]]:
    with FlowCollector(agent_id="parser", run_dir=tmp_path) as c:
        yield c, {d: c.prog_fd(direction=d) for d in ("ingress", "egress")}


def run(
    runner: tuple[FlowCollector, dict[str, int]],
    pkt: bytes,
    *,
    times: int = 1,
    direction: str = "egress",
) -> tuple[list[Flow], FlowStats]:
    c, fds = runner
    before = c.stats()
    for _ in range(times):
        rv, _ = libbpf.test_run(prog_fd=fds[direction], packet=pkt, repeat=1)
        assert rv == TC_ACT_UNSPEC  # observe only, always
    after = c.stats()
    delta = FlowStats(
        *(
            a - b
            for a, b in zip(
                (after.not_ip, after.malformed, after.sampled_out, after.map_full),
                (before.not_ip, before.malformed, before.sampled_out, before.map_full),
                strict=True,
            )
        )
    )
    return c.read_flows(), delta


def test_ipv4_tcp_with_ip_and_tcp_options(runner: tuple[FlowCollector, dict[str, int]]) -> None:
    pkt = ipv4(6, tcp(0x02, doff=8), ihl=7)
    flows, _ = run(runner, pkt, times=3)
    assert len(flows) == 1
    f = flows[0]
    assert (f.src_ip, f.dst_ip, f.src_port, f.dst_port, f.protocol) == (SRC4, DST4, 40000, 443, 6)
    assert (f.packets, f.bytes, f.tcp_flags, f.direction) == (3, 3 * len(pkt), 0x02, "egress")


def test_ipv6_extension_headers_are_walked(runner: tuple[FlowCollector, dict[str, int]]) -> None:
    hop_by_hop = bytes([43, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next: routing, 8 bytes
    routing = bytes([17, 0]) + b"\x00" * 6  # next: UDP, 8 bytes
    pkt = ipv6(0, hop_by_hop + routing + udp())
    flows, _ = run(runner, pkt, direction="ingress")
    assert [
        (f.src_ip, f.dst_ip, f.protocol, f.src_port, f.dst_port, f.direction) for f in flows
    ] == [(SRC6, DST6, 17, 5353, 53, "ingress")]


def test_fragments(runner: tuple[FlowCollector, dict[str, int]]) -> None:
    first = ipv4(17, udp(), frag=0x2000)  # MF set, offset 0: has the UDP header
    later = ipv4(17, b"\x00" * 16, frag=0x0003)  # offset 24: no transport header
    flows, stats = run(runner, first)
    assert [(f.src_port, f.dst_port) for f in flows] == [(5353, 53)]
    flows, stats = run(runner, later)
    assert [(f.protocol, f.src_port, f.dst_port, f.bytes) for f in flows] == [
        (17, 0, 0, len(later))
    ]
    assert stats.malformed == 0
    frag6 = bytes([17, 0]) + struct.pack("!HI", 0x0010, 99)  # offset 2 (x8), not first
    flows, stats = run(runner, ipv6(44, frag6 + b"\x00" * 16))
    assert [(f.protocol, f.src_port, f.dst_port) for f in flows] == [(17, 0, 0)]


@pytest.mark.parametrize(
    ("pkt", "kind"),
    [
        (ipv4(6, tcp(0x02), ihl=5)[:14] + b"\x43" + ipv4(6, tcp(0x02))[15:], "malformed"),  # IHL 3
        (ipv4(6, tcp(0x02), total=12), "malformed"),  # total length below the header
        (ipv4(6, tcp(0x02))[: 14 + 20 + 10], "malformed"),  # TCP header cut short
        (ipv4(6, tcp(0x02, doff=3)), "malformed"),  # TCP data offset below 5
        (ipv6(0, bytes([6, 0]) + b"\x00" * 2), "malformed"),  # extension header cut
        (MAC + b"\x08\x06" + b"\x00" * 28, "not_ip"),  # ARP
        (MAC + b"\x81\x00\x00\x01\x08\x06" + b"\x00" * 28, "not_ip"),  # ARP in a VLAN
    ],
    ids=[
        "bad-ihl",
        "bad-total-length",
        "tcp-truncated",
        "tcp-bad-doff",
        "ipv6-ext-truncated",
        "arp",
        "vlan-arp",
    ],
)
def test_bad_or_foreign_packets_make_no_flow(
    runner: tuple[FlowCollector, dict[str, int]], pkt: bytes, kind: str
) -> None:
    flows, stats = run(runner, pkt, times=2)
    assert flows == []
    assert getattr(stats, kind) == 2


def test_sampling_setting_is_applied(kernel_ready: None, tmp_path: Path) -> None:
    """sample_rate is a const volatile set before load: 1 in 4 kept, weighted by 4."""
    pkt = ipv4(17, udp())
    with FlowCollector(agent_id="parser-sampled", sample_rate=4, run_dir=tmp_path) as c:
        fd = c.prog_fd(direction="egress")
        for _ in range(400):
            libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
        flows = c.read_flows()
        stats = c.stats()
    kept = flows[0].packets // 4 if flows else 0
    assert len(flows) == 1 and flows[0].packets % 4 == 0
    assert flows[0].bytes == flows[0].packets * len(pkt)
    assert kept + stats.sampled_out == 400
    assert 50 <= kept <= 150  # binomial(400, 1/4): mean 100, sd 8.7


def test_lru_evictions_are_estimated(kernel_ready: None, tmp_path: Path) -> None:
    """More distinct flows than the map holds: the surplus shows up as evictions."""
    with FlowCollector(agent_id="parser-lru", max_flows=256, run_dir=tmp_path) as c:
        fd = c.prog_fd(direction="egress")
        for port in range(2000):
            pkt = ipv4(17, struct.pack("!HHHH", 1000 + port, 53, 12, 0) + b"abcd")
            libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
        flows = c.read_flows()
        stats = c.stats()
    assert stats.inserted == 2000
    assert 0 < len(flows) <= 256
    assert stats.evicted_estimate == 2000 - len(flows)
