"""ctypes mirrors of the structs in bpf/orb8_common.bpf.h.

The layouts must match the C side byte for byte; tests/dataplane check the
sizes against the map key and value sizes the kernel reports.
"""

from __future__ import annotations

import ctypes
import struct
from enum import IntEnum

DIR_INGRESS = 0
DIR_EGRESS = 1

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

MAX_SYSCALL_NR = 1024


class FlowStat(IntEnum):
    NOT_IP = 0
    MALFORMED = 1
    SAMPLED_OUT = 2
    MAP_FULL = 3
    INSERTED = 4
    FILTERED = 5


class SyscallStat(IntEnum):
    EVENTS = 0
    RATE_LIMITED = 1
    RINGBUF_FULL = 2
    COUNT_MAP_FULL = 3


class FlowsConfig(ctypes.Structure):
    _fields_ = [
        ("sample_rate", ctypes.c_uint32),
        ("track_ingress", ctypes.c_uint32),
        ("track_egress", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class SyscallsConfig(ctypes.Structure):
    _fields_ = [
        ("alerts_per_second", ctypes.c_uint32),
        ("max_syscall_nr", ctypes.c_uint32),
    ]


# ORB8_FLOW_LAYOUT: bumped whenever a flow key or value changes shape; it is part
# of the pinned maps' names, so a map pinned by another layout is never reused.
FLOW_LAYOUT = 2
# struct flow4_key: saddr daddr (network order) sport dport ifindex proto direction pad
FLOW4_KEY = struct.Struct("=4s4sHHIBBxx")
# struct flow6_key: saddr[16] daddr[16] sport dport ifindex proto direction pad
FLOW6_KEY = struct.Struct("=16s16sHHIBBxx")
# struct flow_value: bytes packets first_seen_ns last_seen_ns tcp_flags last_jiffies
FLOW_VALUE = struct.Struct("=QQQQQQ")
# struct syscall_count_key: cgroup_id nr pad
SYSCALL_COUNT_KEY = struct.Struct("=QIxxxx")
# struct syscall_event: ts_ns cgroup_id pid tgid nr pad comm[16]
SYSCALL_EVENT = struct.Struct("=QQIIIxxxx16s")
# flow filters (ORB8_FILTER_CLAUSES clauses per interface, bit i = clause i)
FILTER_CLAUSES = 32
FILTER_BITMAP_IFS = 65536  # ORB8_FILTER_BITMAP_IFS: ifindexes with a bit in flow_filter_bits
FILTER_PORTS = 16  # ORB8_FILTER_PORTS: ports kept in the interface's own entry
FILTER_CIDR4 = 8  # ORB8_FILTER_CIDR4: IPv4 CIDRs kept there
FILTER_IN_MAP = 0xFFFF  # nports / ncidr4: that list is in its map instead
# struct flow_filter_if: any_port any_peer nports ncidr4 ports[16] port_clauses[16]
#   cidr4[8] {net mask (network order) clauses}
FILTER_IF = struct.Struct(f"=IIHH{FILTER_PORTS}H{FILTER_PORTS}I" + "4s4sI" * FILTER_CIDR4)
# struct flow_filter_port_key: ifindex port pad
FILTER_PORT_KEY = struct.Struct("=IHxx")
# struct flow_filter_cidr4_key / cidr6_key: prefixlen (32 ifindex bits + the CIDR's) ifindex addr
FILTER_CIDR4_KEY = struct.Struct("=II4s")
FILTER_CIDR6_KEY = struct.Struct("=II16s")
FILTER_MASK = struct.Struct("=I")
