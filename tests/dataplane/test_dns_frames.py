"""Crafted DNS frames into the DNS probe (BPF_PROG_TEST_RUN).

Every frame to or from port 53 lands in exactly one exclusive counter
(a query row, an answer row, or one of the reasons it was not counted);
frames of other ports move nothing. Rows carry exactly what the frame said.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orb8_agent.dataplane import libbpf, maps
from orb8_agent.dataplane.dns import DnsCollector, DnsRow, DnsStats
from orb8_agent.dataplane.dns_abi import DNS_INFLIGHT_KEY, DNS_KEY, DNS_NAME_MAX, DNS_VALUE
from orb8_dev import dnswire
from tests.dataplane.test_parser import DST4, DST6, MAC, SRC4, SRC6, ipv4, ipv6, tcp

pytestmark = pytest.mark.kernel

TC_ACT_UNSPEC = 0xFFFFFFFF
CLIENT_PORT = 40001
A, AAAA = 1, 28


@pytest.fixture(scope="module")
def probe(kernel_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsCollector]:
    with DnsCollector(agent_id="dns-frames", run_dir=Path(tmp_path_factory.mktemp("dns"))) as c:
        yield c


def udp(payload: bytes, *, sport: int, dport: int, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, length or 8 + len(payload), 0) + payload


def tcp_seg(payload: bytes, *, sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload


def q4(message: bytes, *, sport: int = CLIENT_PORT) -> bytes:
    return ipv4(17, udp(message, sport=sport, dport=53))


def r4(message: bytes, *, dport: int = CLIENT_PORT) -> bytes:
    """An answer: from the server (DST4:53) back to the client (SRC4)."""
    frame = ipv4(17, udp(message, sport=53, dport=dport))
    # swap the IPv4 addresses: the answer travels server → client
    src, dst = socket.inet_aton(SRC4), socket.inet_aton(DST4)
    ip = 14
    return frame[: ip + 12] + dst + src + frame[ip + 20 :]


def delta(before: DnsStats, after: DnsStats) -> dict[str, int]:
    return {
        k: getattr(after, k) - getattr(before, k)
        for k in before.__dataclass_fields__
        if getattr(after, k) != getattr(before, k)
    }


def send(probe: DnsCollector, *frames: bytes) -> tuple[list[DnsRow], dict[str, int]]:
    probe.read_rows()
    before = probe.stats()
    for frame in frames:
        rv, _ = libbpf.test_run(prog_fd=probe.prog_fd, packet=frame, repeat=1)
        assert rv == TC_ACT_UNSPEC
    after = probe.stats()
    return probe.read_rows(), delta(before, after)


def test_struct_sizes_match_the_kernel_maps(probe: DnsCollector) -> None:
    # the batch read refuses buffers of the wrong key/value size: a round trip proves them
    assert (DNS_KEY.size, DNS_VALUE.size) == (176, 40)
    rows, d = send(probe, q4(dnswire.query(ident=1, name="Example.COM", qtype=A)))
    assert d == {"queries": 1, "inserted": 1}
    assert len(rows) == 1 and rows[0].key.name == "example.com"
    assert maps.read_batch(
        fd=probe.inflight_map_fd, key_size=DNS_INFLIGHT_KEY.size, value_size=8, delete=True
    )[2] == 1  # fmt: skip


def test_query_and_answer_make_rows_with_latency(probe: DnsCollector) -> None:
    query = dnswire.query(ident=0x1234, name="svc.shop.svc.cluster.local", qtype=AAAA)
    reply = dnswire.answer(request=query, rcode=3)
    rows, d = send(probe, q4(query), r4(reply))
    assert d == {"queries": 1, "answers": 1, "inserted": 2}
    by_rcode = {r.key.rcode: r for r in rows}
    q, a = by_rcode[None], by_rcode["NXDOMAIN"]
    for row in (q, a):
        assert row.key.client_ip == SRC4 and row.key.server_ip == DST4
        assert row.key.name == "svc.shop.svc.cluster.local" and row.key.qtype == "AAAA"
        assert row.count == 1 and not row.key.truncated and not row.key.tcp
    assert q.matched == 0
    assert a.matched == 1 and a.latency_max_ns == a.latency_sum_ns > 0


def test_answer_without_query_is_counted_unmatched(probe: DnsCollector) -> None:
    query = dnswire.query(ident=77, name="lonely.example", qtype=A)
    rows, d = send(probe, r4(dnswire.answer(request=query, rcode=2)))
    assert d == {"answers": 1, "unmatched": 1, "inserted": 1}
    assert [(r.key.rcode, r.count, r.matched) for r in rows] == [("SERVFAIL", 1, 0)]


def test_answer_to_another_port_or_id_does_not_match(probe: DnsCollector) -> None:
    query = dnswire.query(ident=5, name="a.example", qtype=A)
    other_id = dnswire.answer(request=dnswire.query(ident=6, name="a.example", qtype=A), rcode=0)
    rows, d = send(probe, q4(query), r4(other_id), r4(dnswire.answer(request=query, rcode=0),
                                                      dport=CLIENT_PORT + 1))  # fmt: skip
    assert d["answers"] == 2 and d["unmatched"] == 2
    assert sum(r.matched for r in rows) == 0


def test_ipv6_query(probe: DnsCollector) -> None:
    query = dnswire.query(ident=9, name="v6.example", qtype=AAAA)
    rows, d = send(probe, ipv6(17, udp(query, sport=CLIENT_PORT, dport=53)))
    assert d == {"queries": 1, "inserted": 1}
    assert rows[0].key.client_ip == SRC6 and rows[0].key.server_ip == DST6


def test_tcp_whole_message_is_parsed_split_is_skipped(probe: DnsCollector) -> None:
    query = dnswire.query(ident=10, name="tcp.example", qtype=A)
    framed = dnswire.tcp_frame(query)
    rows, d = send(
        probe,
        ipv4(6, tcp_seg(framed, sport=CLIENT_PORT, dport=53)),
        ipv4(6, tcp_seg(framed[:9], sport=CLIENT_PORT, dport=53)),  # first part only
        ipv4(6, tcp_seg(b"", sport=CLIENT_PORT, dport=53)),  # an ACK: not a message
    )
    assert d == {"queries": 1, "tcp_skipped": 1, "inserted": 1}
    assert rows[0].key.tcp and rows[0].key.name == "tcp.example"


def test_root_name(probe: DnsCollector) -> None:
    rows, d = send(probe, q4(dnswire.query(ident=11, name=".", qtype=2)))
    assert d == {"queries": 1, "inserted": 1}
    assert rows[0].key.name == "." and rows[0].key.qtype == "NS"


def test_long_name_is_cut_and_flagged(probe: DnsCollector) -> None:
    name = ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 60])  # 245 bytes on the wire
    rows, d = send(probe, q4(dnswire.query(ident=12, name=name, qtype=A)))
    assert d == {"queries": 1, "name_truncated": 1, "inserted": 1}
    key = rows[0].key
    assert key.truncated
    assert name.startswith(key.name) and len(dnswire.encode_name(key.name)) - 1 <= DNS_NAME_MAX


def test_names_differing_in_case_share_a_row(probe: DnsCollector) -> None:
    names = ["MiXeD.Example", "mixed.example", "MIXED.EXAMPLE"]
    frames = [q4(dnswire.query(ident=i, name=n, qtype=A)) for i, n in enumerate(names)]
    rows, d = send(probe, *frames)
    assert d == {"queries": 3, "inserted": 1}
    assert [(r.key.name, r.count) for r in rows] == [("mixed.example", 3)]


def _broken(question: bytes, *, ident: int = 20, qd: int = 1, opcode: int = 0) -> bytes:
    return dnswire.header(ident=ident, qr=False, qdcount=qd, opcode=opcode) + question


FOUR_63_LABELS = b"".join(b"\x3f" + b"x" * 63 for _ in range(4))  # 256 bytes before the root
MALFORMED = {
    "short-header": b"\x00\x01\x01\x00\x00",
    "compression-pointer": _broken(b"\xc0\x0c" + struct.pack("!HH", 1, 1)),
    "pointer-after-label": _broken(b"\x03www\xc0\x0c" + struct.pack("!HH", 1, 1)),
    "label-64": _broken(b"\x40" + b"x" * 64 + b"\x00" + struct.pack("!HH", 1, 1)),
    "label-type-0b01": _broken(b"\x41" + b"x" * 65 + b"\x00\x00\x01\x00\x01"),
    "name-runs-off": _broken(b"\x07exam"),
    "no-qtype": _broken(b"\x03abc\x00\x00"),
    "name-over-255": _broken(FOUR_63_LABELS + b"\x00\x00\x01\x00\x01"),
    "empty-question": _broken(b""),
}  # fmt: skip


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_counts_once_and_makes_no_row(probe: DnsCollector, payload: bytes) -> None:
    rows, d = send(probe, q4(payload))
    assert rows == []
    assert d.get("malformed") == 1
    assert set(d) <= {"malformed", "compressed"}
    if b"\xc0\x0c" in payload[12:14] or payload.endswith(b"\xc0\x0c" + struct.pack("!HH", 1, 1)):
        assert d["compressed"] == 1


@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (_broken(dnswire.question(name="x.example", qtype=A), qd=0), "qdcount"),
        (_broken(dnswire.question(name="x.example", qtype=A) * 2, qd=2), "qdcount"),
        (_broken(dnswire.question(name="x.example", qtype=A), opcode=4), "not_query"),
    ],
    ids=["qdcount-0", "qdcount-2", "opcode-notify"],
)
def test_not_a_single_standard_question(probe: DnsCollector, payload: bytes, counter: str) -> None:
    rows, d = send(probe, q4(payload))
    assert rows == [] and d == {counter: 1}


def test_query_sent_from_port_53_to_elsewhere_is_not_a_query(probe: DnsCollector) -> None:
    frame = ipv4(17, udp(dnswire.query(ident=1, name="x.example", qtype=A), sport=53, dport=999))
    rows, d = send(probe, frame)
    assert rows == [] and d == {"not_query": 1}


def test_udp_length_beyond_the_datagram_is_malformed(probe: DnsCollector) -> None:
    message = dnswire.query(ident=1, name="x.example", qtype=A)
    rows, d = send(probe, ipv4(17, udp(message, sport=CLIENT_PORT, dport=53, length=400)))
    assert rows == [] and d == {"malformed": 1}


def test_other_ports_move_nothing(probe: DnsCollector) -> None:
    message = dnswire.query(ident=1, name="x.example", qtype=A)
    rows, d = send(
        probe,
        ipv4(6, tcp(0x02)),
        ipv4(17, udp(message, sport=5353, dport=5353)),
        ipv6(6, tcp(0x10)),
        MAC + b"\x08\x06" + b"\x00" * 28,  # ARP
    )
    assert rows == [] and d == {}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(min_size=0, max_size=300), tcp_=st.booleans(), answer=st.booleans())
def test_random_payloads_count_exactly_once(
    probe: DnsCollector, body: bytes, tcp_: bool, answer: bool
) -> None:
    sport, dport = (53, CLIENT_PORT) if answer else (CLIENT_PORT, 53)
    if tcp_:
        frame = ipv4(6, tcp_seg(dnswire.tcp_frame(body), sport=sport, dport=dport))
    else:
        frame = ipv4(17, udp(body, sport=sport, dport=dport))
    before = probe.stats()
    rows, _ = send(probe, frame)
    after = probe.stats()
    assert after.packets - before.packets == 1
    assert sum(r.count for r in rows) == (after.queries + after.answers) - (
        before.queries + before.answers
    )
