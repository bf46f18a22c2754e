"""Build DNS messages byte by byte (tests, the DNS test server and the bench).

Only what orb8's tests need: one question, an optional A answer, and the
ways a message can be broken on purpose.
"""

from __future__ import annotations

import struct

QTYPE_NUMBERS = {"A": 1, "NS": 2, "CNAME": 5, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
RCODE_NUMBERS = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "REFUSED": 5}


def encode_name(name: str) -> bytes:
    """``example.com`` → length-prefixed labels ending in the root byte."""
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode()
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def header(*, ident: int, qr: bool, rcode: int = 0, opcode: int = 0, qdcount: int = 1,
           ancount: int = 0) -> bytes:  # fmt: skip
    flags = (0x8000 if qr else 0) | (opcode << 11) | 0x0100 | (0x0080 if qr else 0) | rcode
    return struct.pack("!HHHHHH", ident, flags, qdcount, ancount, 0, 0)


def question(*, name: str | bytes, qtype: int, qclass: int = 1) -> bytes:
    wire = encode_name(name) if isinstance(name, str) else name
    return wire + struct.pack("!HH", qtype, qclass)


def query(*, ident: int, name: str | bytes, qtype: int) -> bytes:
    return header(ident=ident, qr=False) + question(name=name, qtype=qtype)


def answer(*, request: bytes, rcode: int, address: bytes = b"\x0a\x00\x00\x01") -> bytes:
    """The reply to ``request`` (its question echoed), with one A record when NOERROR + A."""
    ident = struct.unpack("!H", request[:2])[0]
    end = question_end(request)
    q = request[12:end]
    qtype = struct.unpack("!H", q[-4:-2])[0]
    records = b""
    if rcode == 0 and qtype == 1:
        # a compression pointer to the question's name (offset 12), as real servers write
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + address
    return header(ident=ident, qr=True, rcode=rcode, ancount=1 if records else 0) + q + records


def question_end(message: bytes) -> int:
    """Offset just past the first question (labels, root, qtype, qclass)."""
    pos = 12
    while message[pos]:
        pos += message[pos] + 1
    return pos + 5


def tcp_frame(message: bytes) -> bytes:
    """A message as DNS over TCP sends it: a two-byte length first."""
    return struct.pack("!H", len(message)) + message
