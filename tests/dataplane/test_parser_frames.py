"""Crafted and random frames into the flow probe's parser (BPF_PROG_TEST_RUN).

Every frame the kernel hands the program is accounted exactly once: as one
packet of one flow (with the frame's full length as bytes), or in the
per-CPU ``not_ip`` or ``malformed`` counter. Nothing is counted twice, nothing
vanishes, and the program always returns TC_ACT_UNSPEC.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.models import Flow
from orb8_common.errors import Orb8Error
from tests.dataplane.test_parser import DST4, DST6, MAC, SRC4, SRC6, ipv4, ipv6, tcp, udp

pytestmark = pytest.mark.kernel

TC_ACT_UNSPEC = 0xFFFFFFFF
Runner = tuple[FlowCollector, int]


@pytest.fixture(scope="module")
def runner(kernel_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    with FlowCollector(
        agent_id="parser-frames", run_dir=Path(tmp_path_factory.mktemp("frames"))
    ) as c:
        yield c, c.prog_fd(direction="egress")


def tag(tpid: int, vid: int) -> bytes:
    return struct.pack("!HH", tpid, vid)


def tagged(*tags: bytes, inner: bytes) -> bytes:
    """``inner`` (a whole Ethernet frame) with VLAN tags inserted after the MACs."""
    return inner[:12] + b"".join(tags) + inner[12:]


def send(runner: Runner, pkt: bytes) -> tuple[list[Flow], int, int]:
    """Run one frame; return (flows it made, not_ip delta, malformed delta)."""
    c, fd = runner
    c.read_flows()  # start from an empty map
    before = c.stats()
    rv, _ = libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
    assert rv == TC_ACT_UNSPEC
    after = c.stats()
    return c.read_flows(), after.not_ip - before.not_ip, after.malformed - before.malformed


def accounted_once(runner: Runner, pkt: bytes) -> tuple[list[Flow], str]:
    flows, not_ip, malformed = send(runner, pkt)
    packets = sum(f.packets for f in flows)
    assert packets + not_ip + malformed == 1, (flows, not_ip, malformed)
    if packets:
        assert sum(f.bytes for f in flows) == len(pkt)
        return flows, "flow"
    return flows, "not_ip" if not_ip else "malformed"


# ------------------------------------------------------------------ VLAN


@pytest.mark.parametrize(
    ("tags", "inner", "expect"),
    [
        ((tag(0x8100, 7),), ipv4(17, udp()), (SRC4, DST4, 17, 5353, 53)),
        ((tag(0x88A8, 100), tag(0x8100, 7)), ipv6(6, tcp(0x12)), (SRC6, DST6, 6, 40000, 443)),
        ((tag(0x8100, 1), tag(0x8100, 2)), ipv4(6, tcp(0x02)), (SRC4, DST4, 6, 40000, 443)),
    ],
    ids=["802.1Q-ipv4-udp", "QinQ-ipv6-tcp", "double-802.1Q-ipv4-tcp"],
)
def test_vlan_tagged_ip_is_a_flow_with_its_real_ports(
    runner: Runner, tags: tuple[bytes, ...], inner: bytes, expect: tuple[object, ...]
) -> None:
    flows, kind = accounted_once(runner, tagged(*tags, inner=inner))
    assert kind == "flow"
    (f,) = flows
    assert (f.src_ip, f.dst_ip, f.protocol, f.src_port, f.dst_port) == expect


@pytest.mark.parametrize(
    ("pkt", "kind"),
    [
        (tagged(tag(0x88A8, 1), tag(0x8100, 2), tag(0x8100, 3), inner=ipv4(17, udp())), "not_ip"),
        (tagged(tag(0x8100, 5), inner=MAC + b"\x08\x06" + b"\x00" * 28), "not_ip"),
        # a tag whose IPv4 header is cut after 10 bytes
        (tagged(tag(0x8100, 5), inner=ipv4(17, udp()))[: 18 + 10], "malformed"),
    ],
    ids=["three-tags", "vlan-arp", "vlan-ipv4-truncated"],
)
def test_unparsable_vlan_frames_only_bump_a_counter(runner: Runner, pkt: bytes, kind: str) -> None:
    flows, got = accounted_once(runner, pkt)
    assert (flows, got) == ([], kind)


# ------------------------------------------------------------------ IPv4


@pytest.mark.parametrize("ihl", [0, 1, 2, 3, 4])
def test_ipv4_ihl_below_five_is_malformed(runner: Runner, ihl: int) -> None:
    good = ipv4(17, udp())
    pkt = good[:14] + bytes([0x40 | ihl]) + good[15:]
    assert accounted_once(runner, pkt) == ([], "malformed")


def test_ipv4_ihl_longer_than_the_frame_is_malformed(runner: Runner) -> None:
    good = ipv4(17, udp())  # 20-byte header + 12-byte UDP: shorter than IHL 15's 60 bytes
    pkt = good[:14] + b"\x4f" + good[15:]
    assert accounted_once(runner, pkt) == ([], "malformed")


def test_ipv4_header_with_an_ipv6_version_is_malformed(runner: Runner) -> None:
    good = ipv4(17, udp())
    assert accounted_once(runner, good[:14] + b"\x65" + good[15:]) == ([], "malformed")


@pytest.mark.parametrize(
    ("fast", "general"),
    [
        (ipv4(6, tcp(0x18)), ipv4(6, tcp(0x18), ihl=6)),
        (ipv4(17, udp() + b"x" * 40), ipv4(17, udp() + b"x" * 40, ihl=6)),
        # too short for the fast path's room for a full TCP header
        (ipv4(17, udp() + b"x" * 40), ipv4(17, udp())),
    ],
    ids=["tcp-options", "udp-options", "udp-short"],
)
def test_the_fast_path_and_the_general_parser_make_the_same_flow(
    runner: Runner, fast: bytes, general: bytes
) -> None:
    """A 20-byte-header IPv4 TCP/UDP frame takes the copy-free path; the same packet with
    an IP option (or too short to hold a TCP header) takes the general parser."""
    a, kind_a = accounted_once(runner, fast)
    b, kind_b = accounted_once(runner, general)
    assert kind_a == kind_b == "flow"
    assert (a[0].key, a[0].tcp_flags) == (b[0].key, b[0].tcp_flags)
    assert a[0].src_port != 0 and a[0].dst_port != 0


COARSE = 6  # CLOCK_MONOTONIC_COARSE: the clock bpf_ktime_get_coarse_ns() reads


def test_last_seen_follows_the_coarse_clock(runner: Runner) -> None:
    """The probe re-reads the clock only when jiffies moved since a flow's last packet;
    a packet one tick after the first still moves last_seen to the tick's time."""
    c, fd = runner
    c.read_flows()
    pkt = ipv4(6, tcp(0x10))
    libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
    first = time.clock_gettime_ns(COARSE)
    deadline = time.monotonic() + 30
    while time.clock_gettime_ns(COARSE) == first:  # the next tick
        assert time.monotonic() < deadline, "the coarse clock did not move"
        time.sleep(0.001)
    mid = time.clock_gettime_ns(COARSE)
    libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
    after = time.clock_gettime_ns(COARSE)
    [flow] = c.read_flows()
    assert flow.packets == 2
    assert flow.first_seen_ns <= first < mid <= flow.last_seen_ns <= after


def test_ipv4_with_options_reads_ports_after_them(runner: Runner) -> None:
    flows, kind = accounted_once(runner, ipv4(17, udp(), ihl=15))
    assert kind == "flow" and (flows[0].src_port, flows[0].dst_port) == (5353, 53)


@pytest.mark.parametrize("cut", [1, 2, 3], ids=lambda n: f"icmp-{n}-bytes")
def test_truncated_icmp_is_malformed(runner: Runner, cut: int) -> None:
    assert accounted_once(runner, ipv4(1, b"\x08\x00\x00\x00")[: 14 + 20 + cut]) == (
        [],
        "malformed",
    )


# ------------------------------------------------------------------ IPv6 chains

HOP = 0
ROUTING = 43
FRAGMENT = 44
DSTOPTS = 60


def ext(next_hdr: int, *, units: int = 0) -> bytes:
    """A hop-by-hop/routing/destination-options header of (units + 1) * 8 bytes."""
    return bytes([next_hdr, units]) + b"\x00" * (6 + 8 * units)


def frag(next_hdr: int, *, offset_units: int, more: bool = False) -> bytes:
    return bytes([next_hdr, 0]) + struct.pack("!HI", (offset_units << 3) | int(more), 1234)


def test_first_fragment_inside_a_chain_reads_the_ports(runner: Runner) -> None:
    chain = ext(FRAGMENT) + frag(6, offset_units=0, more=True) + tcp(0x02)
    flows, kind = accounted_once(runner, ipv6(HOP, chain))
    assert kind == "flow"
    assert (flows[0].protocol, flows[0].src_port, flows[0].dst_port) == (6, 40000, 443)


def test_later_fragment_after_options_has_no_ports(runner: Runner) -> None:
    chain = ext(FRAGMENT, units=1) + frag(17, offset_units=5) + b"\xff" * 16
    flows, kind = accounted_once(runner, ipv6(DSTOPTS, chain))
    assert kind == "flow"
    assert (flows[0].protocol, flows[0].src_port, flows[0].dst_port) == (17, 0, 0)


def test_a_chain_longer_than_the_walk_is_counted_without_ports(runner: Runner) -> None:
    """Five options headers, then UDP: the walk stops after four, and the packet
    is counted under the header it stopped at, never with bytes misread as ports."""
    chain = b"".join(ext(DSTOPTS) for _ in range(4)) + ext(17) + udp()
    flows, kind = accounted_once(runner, ipv6(DSTOPTS, chain))
    assert kind == "flow"
    assert (flows[0].protocol, flows[0].src_port, flows[0].dst_port) == (DSTOPTS, 0, 0)


@pytest.mark.parametrize(
    "chain",
    [
        ext(ROUTING, units=8)[:16],  # claims 72 bytes, has 16
        ext(HOP) + ext(6),  # TCP header missing after the chain
        ext(FRAGMENT) + frag(6, offset_units=0)[:4],  # fragment header cut
    ],
    ids=["ext-longer-than-frame", "tcp-missing-after-chain", "fragment-header-cut"],
)
def test_broken_chains_are_malformed(runner: Runner, chain: bytes) -> None:
    assert accounted_once(runner, ipv6(HOP, chain)) == ([], "malformed")


# ------------------------------------------------------------------ runts


@pytest.mark.parametrize(
    "pkt",
    [b"", MAC[:5], MAC + b"\x08", MAC + b"\x08\x00", MAC + b"\x08\x00" + b"\x45" * 10],
    ids=["zero-length", "5-bytes", "13-bytes", "ethernet-only", "ipv4-10-bytes"],
)
def test_runts_are_refused_by_the_kernel_before_the_program(runner: Runner, pkt: bytes) -> None:
    """The test runner refuses frames shorter than Ethernet + L3 header; such
    frames on a real link are test_flows.py's raw-frames case. Either way the
    refusal touches no counter and no flow."""
    c, fd = runner
    c.read_flows()
    before = c.stats()
    with pytest.raises(Orb8Error, match="EINVAL"):
        libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
    after = c.stats()
    assert (after.not_ip, after.malformed) == (before.not_ip, before.malformed)
    assert c.read_flows() == []


# ------------------------------------------------------------------ random frames

ETHERTYPES = st.sampled_from([0x0800, 0x86DD, 0x8100, 0x88A8, 0x0806, 0x1234])
IPV4_LIKE = st.builds(
    lambda proto, payload, ihl, total, frag_off: ipv4(
        proto, payload, ihl=ihl, total=total, frag=frag_off
    ),
    st.sampled_from([1, 6, 17, 47, 58, 255]),
    st.binary(max_size=80),
    st.integers(5, 15),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.sampled_from([0, 0x2000, 0x0001, 0x4000]),
)
IPV6_LIKE = st.builds(
    lambda next_hdr, payload: ipv6(next_hdr, payload),
    st.sampled_from([HOP, ROUTING, FRAGMENT, DSTOPTS, 6, 17, 58, 59]),
    st.binary(max_size=120),
)
RAW = st.builds(
    lambda ethertype, body: MAC + struct.pack("!H", ethertype) + body,
    ETHERTYPES,
    st.binary(min_size=40, max_size=120),
)
FRAMES = st.one_of(
    IPV4_LIKE,
    IPV6_LIKE,
    RAW,
    st.builds(
        lambda tags, inner: tagged(*tags, inner=inner),
        st.lists(
            st.builds(tag, st.sampled_from([0x8100, 0x88A8]), st.integers(0, 4095)),
            min_size=1,
            max_size=3,
        ),
        st.one_of(IPV4_LIKE, IPV6_LIKE),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(FRAMES)
def test_every_random_frame_is_accounted_exactly_once(runner: Runner, pkt: bytes) -> None:
    try:
        accounted_once(runner, pkt)
    except Orb8Error as err:
        # only the test runner's own length check may refuse a frame
        assert "EINVAL" in str(err)
