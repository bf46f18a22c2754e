"""Decode the flow maps' batch buffers column by column.

A drain returns the keys and the values of a map packed back to back. Instead
of one Python object per flow, :func:`decode` slices each field out of the
whole buffer at once (``memoryview`` casts with a stride, converted to lists
in C) and names addresses through a dict that survives between reads, so
100k flows cost a few list conversions rather than 100k object
constructions. :meth:`FlowColumns.rows` builds :class:`Flow` objects for
callers that want them; :func:`decode_rows` is the straightforward per-flow
decoder, kept as the reference the column decoder is tested against.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from .abi import DIR_INGRESS, FLOW4_KEY, FLOW6_KEY, FLOW_VALUE
from .models import Flow

_DIRECTIONS = ("ingress", "egress")
_VALUE_WORDS = FLOW_VALUE.size // 8
_MAX_NAMES = 65536


class AddressNames(dict[bytes | int, str]):
    """Address (4/16 raw bytes, or an IPv4 u32 as the map holds it) -> text, filled on miss."""

    def __missing__(self, addr: bytes | int) -> str:
        if isinstance(addr, int):
            text = socket.inet_ntop(socket.AF_INET, addr.to_bytes(4, sys.byteorder))
        elif len(addr) == 4:
            text = socket.inet_ntop(socket.AF_INET, addr)
        else:
            text = socket.inet_ntop(socket.AF_INET6, addr)
        self[addr] = text
        return text

    def trim(self) -> None:
        """Bound the cache: a node sees new addresses forever."""
        if len(self) > _MAX_NAMES:
            self.clear()


@dataclass(slots=True)
class FlowColumns:
    """Flows as parallel lists, one per :class:`Flow` field (row i is flow i)."""

    src_ip: list[str] = field(default_factory=list)
    dst_ip: list[str] = field(default_factory=list)
    src_port: list[int] = field(default_factory=list)
    dst_port: list[int] = field(default_factory=list)
    protocol: list[int] = field(default_factory=list)
    direction: list[str] = field(default_factory=list)
    ifindex: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    packets: list[int] = field(default_factory=list)
    tcp_flags: list[int] = field(default_factory=list)
    first_seen_ns: list[int] = field(default_factory=list)
    last_seen_ns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.bytes)

    def extend(self, other: FlowColumns) -> None:
        for name in FlowColumns.__slots__:
            getattr(self, name).extend(getattr(other, name))

    def rows(self) -> list[Flow]:
        return list(map(Flow, *self._columns()))

    def _columns(self) -> Iterator[list[int] | list[str]]:
        return (getattr(self, name) for name in Flow.__slots__)

    def total_bytes(self) -> int:
        return sum(self.bytes)


def _values(cols: FlowColumns, values: bytes) -> None:
    words = memoryview(values).cast("Q")
    cols.bytes = words[0::_VALUE_WORDS].tolist()
    cols.packets = words[1::_VALUE_WORDS].tolist()
    cols.first_seen_ns = words[2::_VALUE_WORDS].tolist()
    cols.last_seen_ns = words[3::_VALUE_WORDS].tolist()
    cols.tcp_flags = words[4::_VALUE_WORDS].tolist()


def decode4(*, keys: bytes, values: bytes, names: AddressNames) -> FlowColumns:
    """Columns of a drained flows4 map (struct flow4_key: 5 u32 words per key)."""
    cols = FlowColumns()
    if not keys:
        return cols
    step32 = FLOW4_KEY.size // 4
    step16 = FLOW4_KEY.size // 2
    w32 = memoryview(keys).cast("I")
    w16 = memoryview(keys).cast("H")
    w8 = memoryview(keys)
    lookup = names.__getitem__
    cols.src_ip = list(map(lookup, w32[0::step32].tolist()))
    cols.dst_ip = list(map(lookup, w32[1::step32].tolist()))
    cols.src_port = w16[4::step16].tolist()
    cols.dst_port = w16[5::step16].tolist()
    cols.ifindex = w32[3::step32].tolist()
    cols.protocol = w8[16 :: FLOW4_KEY.size].tolist()
    cols.direction = list(map(_DIRECTIONS.__getitem__, w8[17 :: FLOW4_KEY.size].tolist()))
    _values(cols, values)
    return cols


def decode6(*, keys: bytes, values: bytes, names: AddressNames) -> FlowColumns:
    """Columns of a drained flows6 map (44-byte keys: unpacked per key, then transposed)."""
    cols = FlowColumns()
    if not keys:
        return cols
    src, dst, sport, dport, ifindex, proto, direction = zip(
        *FLOW6_KEY.iter_unpack(keys), strict=True
    )
    lookup = names.__getitem__
    cols.src_ip = list(map(lookup, src))
    cols.dst_ip = list(map(lookup, dst))
    cols.src_port, cols.dst_port = list(sport), list(dport)
    cols.ifindex, cols.protocol = list(ifindex), list(proto)
    cols.direction = list(map(_DIRECTIONS.__getitem__, direction))
    _values(cols, values)
    return cols


def decode_rows(*, family: int, keys: bytes, values: bytes) -> list[Flow]:
    """One :class:`Flow` per entry, field by field: the reference for the column decoders."""
    layout, af = (FLOW4_KEY, socket.AF_INET) if family == 4 else (FLOW6_KEY, socket.AF_INET6)
    out: list[Flow] = []
    for (src, dst, sport, dport, ifindex, proto, direction), value in zip(
        layout.iter_unpack(keys), FLOW_VALUE.iter_unpack(values), strict=True
    ):
        nbytes, packets, first, last, flags, _jiffies = value
        out.append(
            Flow(
                socket.inet_ntop(af, src),
                socket.inet_ntop(af, dst),
                sport,
                dport,
                proto,
                "ingress" if direction == DIR_INGRESS else "egress",
                ifindex,
                nbytes,
                packets,
                flags,
                first,
                last,
            )
        )
    return out
