"""Mirrors of the structs in bpf/orb8_dns.bpf.h (the DNS probe's maps).

The layouts must match the C side byte for byte; tests/dataplane/test_dns.py
checks the sizes against the key and value sizes the kernel reports.
"""

from __future__ import annotations

import ctypes
import struct
from enum import IntEnum

DNS_NAME_MAX = 128
# ORB8_DNS_LAYOUT: bumped whenever dns_key, dns_value or dns_inflight_key changes
# shape; it is part of the pinned maps' names, so a map pinned by another layout
# is never reused.
DNS_LAYOUT = 1
RCODE_QUERY = 0xFF
FLAG_NAME_TRUNCATED = 0x01
FLAG_TCP = 0x02


class DnsStat(IntEnum):
    QUERIES = 0
    ANSWERS = 1
    MALFORMED = 2
    QDCOUNT = 3
    NOT_QUERY = 4
    MAP_FULL = 5
    TCP_SKIPPED = 6
    COMPRESSED = 7
    NAME_TRUNCATED = 8
    UNMATCHED = 9
    INSERTED = 10


# Every DNS-port packet lands in exactly one of these (the rest are sub-counts).
EXCLUSIVE_STATS = (
    DnsStat.QUERIES,
    DnsStat.ANSWERS,
    DnsStat.MALFORMED,
    DnsStat.QDCOUNT,
    DnsStat.NOT_QUERY,
    DnsStat.MAP_FULL,
    DnsStat.TCP_SKIPPED,
)


class DnsConfig(ctypes.Structure):
    _fields_ = [
        ("port", ctypes.c_uint16),
        ("tcp", ctypes.c_uint16),
        ("pad", ctypes.c_uint32),
    ]


# struct dns_key: client[16] server[16] ifindex qtype rcode family name_len flags pad name[128]
DNS_KEY = struct.Struct(f"=16s16sIHBBBB6x{DNS_NAME_MAX}s")
# struct dns_value: count matched latency_sum_ns latency_max_ns last_seen_ns
DNS_VALUE = struct.Struct("=QQQQQ")
# struct dns_inflight_key: client[16] ifindex client_port id family proto pad
DNS_INFLIGHT_KEY = struct.Struct("=16sIHHBBxx")
