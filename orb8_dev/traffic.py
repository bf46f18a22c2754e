"""Traffic for data-plane tests and the bench, run inside a test namespace.

Usage: ``ip netns exec NS python -m orb8_dev.traffic <command> ...``.
Every command prints one JSON object with what it sent or received, so the
caller can compare it with what the probe counted. Loops are bounded by a
count or a duration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def tcp_sink(args: argparse.Namespace) -> dict[str, float]:
    with socket.socket(_family(args.bind), socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((args.bind, args.port))
        srv.listen(1)
        srv.settimeout(args.timeout)
        print(json.dumps({"listening": True}), flush=True)
        conn, _ = srv.accept()
        total = 0
        start = time.monotonic()
        with conn:
            conn.settimeout(args.timeout)
            while chunk := conn.recv(1 << 20):
                total += len(chunk)
        return {"received": total, "seconds": time.monotonic() - start}


def tcp_send(args: argparse.Namespace) -> dict[str, float]:
    buf = b"\x5a" * (1 << 17)
    sent = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    with socket.create_connection((args.dst, args.port), timeout=args.timeout) as sock:
        start = time.monotonic()
        while True:
            if args.bytes and sent >= args.bytes:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            chunk = buf if not args.bytes else buf[: min(len(buf), args.bytes - sent)]
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)
        # wait for the peer to close so FIN/ACK exchange completes
        sock.recv(1)
        elapsed = time.monotonic() - start
    return {"sent": sent, "seconds": elapsed, "bits_per_second": sent * 8 / max(elapsed, 1e-9)}


def udp_send(args: argparse.Namespace) -> dict[str, float]:
    payload = b"\x00" * args.size
    sent = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    with socket.socket(_family(args.dst), socket.SOCK_DGRAM) as sock:
        sock.connect((args.dst, args.port))
        start = time.monotonic()
        while (not args.count or sent < args.count) and (
            deadline is None or (sent & 255) or time.monotonic() < deadline
        ):
            # a send that reports an earlier ICMP port unreachable sends nothing
            with contextlib.suppress(ConnectionRefusedError, BlockingIOError):
                sock.send(payload)
                sent += 1
            if args.count and sent >= args.count:
                break
        elapsed = time.monotonic() - start
    return {"sent": sent, "seconds": elapsed, "packets_per_second": sent / max(elapsed, 1e-9)}


def udp_flows(args: argparse.Namespace) -> dict[str, float]:
    """Keep ``--flows`` UDP flows active: one datagram to each port of a range, each round.

    The soak's load: every flow sees a packet every ``--interval`` seconds
    until ``--duration`` is over. Nothing needs to listen: the datagrams are
    counted on the sender's veth whatever becomes of them.
    """
    payload = b"\x00" * args.size
    ports = range(args.first_port, args.first_port + args.flows)
    sent = rounds = 0
    deadline = time.monotonic() + args.duration
    with socket.socket(_family(args.dst), socket.SOCK_DGRAM) as sock:
        print(json.dumps({"started": True}), flush=True)
        while time.monotonic() < deadline:
            started = time.monotonic()
            for port in ports:
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.sendto(payload, (args.dst, port))
                    sent += 1
            rounds += 1
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    return {"sent": sent, "rounds": rounds}


def udp_sink(args: argparse.Namespace) -> dict[str, float]:
    got = 0
    with socket.socket(_family(args.bind), socket.SOCK_DGRAM) as sock:
        sock.bind((args.bind, args.port))
        sock.settimeout(0.5)
        print(json.dumps({"listening": True}), flush=True)
        deadline = time.monotonic() + args.duration
        while time.monotonic() < deadline:
            try:
                sock.recv(65536)
                got += 1
            except TimeoutError:
                continue
    return {"received": got}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(args: argparse.Namespace) -> dict[str, float]:
    v6 = ":" in args.dst
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    replies = 0
    with socket.socket(_family(args.dst), socket.SOCK_RAW, proto) as sock:
        sock.settimeout(1.0)
        ident = os.getpid() & 0xFFFF
        for seq in range(args.count):
            body = struct.pack("!HH", ident, seq) + b"orb8" * 8
            kind = 128 if v6 else 8
            # the kernel fills the ICMPv6 checksum; IPv4 needs ours
            csum = 0 if v6 else _checksum(struct.pack("!BBH", kind, 0, 0) + body)
            sock.sendto(struct.pack("!BBH", kind, 0, csum) + body, (args.dst, 0))
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(2048)
                except TimeoutError:
                    break
                icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
                if icmp[0] == (129 if v6 else 0) and icmp[4:8] == body[:4]:
                    replies += 1
                    break
    return {"sent": args.count, "replies": replies}


# Addresses of the crafted frames: TEST-NET-2 (RFC 5737), which veth_pair never
# hands out, so a flow carrying them can only have come from a crafted frame.
CRAFTED_SRC_IP4 = "198.51.100.1"
CRAFTED_DST_IP4 = "198.51.100.2"


def raw_frames(args: argparse.Namespace) -> dict[str, float]:
    """Send crafted Ethernet frames that a parser must not count as flows."""
    src = b"\x02\x00\x00\x00\x00\x01"
    dst = b"\xff" * 6
    ip4 = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        40,
        1,
        0,
        64,
        6,
        0,
        socket.inet_aton(CRAFTED_SRC_IP4),
        socket.inet_aton(CRAFTED_DST_IP4),
    )
    frames = {
        # IPv4 ethertype, header cut at 10 bytes
        "truncated-ipv4": dst + src + b"\x08\x00" + ip4[:10],
        # IHL 3 (12 bytes) is below the minimum of 5
        "bad-ihl": dst + src + b"\x08\x00" + bytes([0x43]) + ip4[1:] + b"\x00" * 20,
        # IPv6 ethertype, only 20 of the 40 header bytes
        "short-ipv6": dst + src + b"\x86\xdd" + b"\x60" + b"\x00" * 19,
        # IPv4 with a TCP header cut short
        "truncated-tcp": dst + src + b"\x08\x00" + ip4 + b"\x00\x50\x00",
        # an ethertype that is neither IPv4 nor IPv6 (local experimental)
        "non-ip": dst + src + b"\x88\xb5" + b"orb8" * 12,
    }
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((args.interface, 0))
        for kind in args.kinds:
            for _ in range(args.count):
                sock.send(frames[kind])
                sent += 1
    return {"sent": sent}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="traffic")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("tcp-sink")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--timeout", type=float, default=30.0)
    s.set_defaults(func=tcp_sink)
    s = sub.add_parser("tcp-send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bytes", type=int, default=0)
    s.add_argument("--duration", type=float, default=0.0)
    s.add_argument("--timeout", type=float, default=30.0)
    s.set_defaults(func=tcp_send)
    s = sub.add_parser("udp-send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--count", type=int, default=0)
    s.add_argument("--duration", type=float, default=0.0)
    s.set_defaults(func=udp_send)
    s = sub.add_parser("udp-flows")
    s.add_argument("--dst", required=True)
    s.add_argument("--first-port", type=int, default=20000)
    s.add_argument("--flows", type=int, default=10000)
    s.add_argument("--size", type=int, default=32)
    s.add_argument("--interval", type=float, default=2.0)
    s.add_argument("--duration", type=float, required=True)
    s.set_defaults(func=udp_flows)
    s = sub.add_parser("udp-sink")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--duration", type=float, default=5.0)
    s.set_defaults(func=udp_sink)
    s = sub.add_parser("icmp")
    s.add_argument("--dst", required=True)
    s.add_argument("--count", type=int, default=3)
    s.set_defaults(func=icmp_echo)
    s = sub.add_parser("raw")
    s.add_argument("--interface", required=True)
    s.add_argument("--count", type=int, default=5)
    s.add_argument("kinds", nargs="+")
    s.set_defaults(func=raw_frames)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: dict[str, float] = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
