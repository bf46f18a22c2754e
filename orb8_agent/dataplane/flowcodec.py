"""Decode the flow maps' batch buffers column by column.

A drain returns the keys and the values of a map packed back to back. Instead
of one Python object per flow, :func:`decode4` copies each field out of the
whole buffer at once into a typed array (a strided ``memoryview`` copy, done
in C), so 100k flows cost a dozen array copies rather than 100k object
constructions; addresses are named on demand through a dict that survives
between reads. :meth:`FlowColumns.rows` builds :class:`Flow` objects for
callers that want them; :func:`decode_rows` is the straightforward per-flow
decoder, kept as the reference the column decoder is tested against.
"""

from __future__ import annotations

import socket
import sys
from array import array
from collections.abc import Sequence
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


Column = Sequence[int]
Addresses = Sequence[int | bytes]


def _u64(view: memoryview, start: int, step: int) -> array[int]:
    """Every ``step``-th u64 from ``start``: a strided copy in C, no Python ints."""
    return array("Q", view[start::step].tobytes())


@dataclass(slots=True)
class FlowColumns:
    """Flows as parallel columns, one per :class:`Flow` field (row i is flow i).

    Numbers stay in typed arrays (``array``: no object per value). Addresses
    stay as the map holds them and become text on first use of
    :attr:`src_ip`/:attr:`dst_ip` (or :meth:`rows`), through the reader's
    name cache, so a caller that only sums bytes never pays for them.
    """

    src_addr: Addresses = ()
    dst_addr: Addresses = ()
    src_port: Column = ()
    dst_port: Column = ()
    protocol: Column = ()
    dir_code: Column = ()  # DIR_INGRESS / DIR_EGRESS
    ifindex: Column = ()
    bytes: Column = ()
    packets: Column = ()
    tcp_flags: Column = ()
    first_seen_ns: Column = ()
    last_seen_ns: Column = ()
    names: AddressNames = field(default_factory=AddressNames)

    def __len__(self) -> int:
        return len(self.bytes)

    @property
    def src_ip(self) -> list[str]:
        return list(map(self.names.__getitem__, self.src_addr))

    @property
    def dst_ip(self) -> list[str]:
        return list(map(self.names.__getitem__, self.dst_addr))

    @property
    def direction(self) -> list[str]:
        return list(map(_DIRECTIONS.__getitem__, self.dir_code))

    def extend(self, other: FlowColumns) -> FlowColumns:
        """A new batch: this one's rows, then ``other``'s."""
        joined: dict[str, list[int | bytes]] = {
            name: [*getattr(self, name), *getattr(other, name)]
            for name in FlowColumns.__slots__
            if name != "names"
        }
        return FlowColumns(names=self.names, **joined)  # type: ignore[arg-type]

    def rows(self) -> list[Flow]:
        return list(
            map(
                Flow,
                self.src_ip,
                self.dst_ip,
                self.src_port,
                self.dst_port,
                self.protocol,
                self.direction,
                self.ifindex,
                self.bytes,
                self.packets,
                self.tcp_flags,
                self.first_seen_ns,
                self.last_seen_ns,
            )
        )

    def total_bytes(self) -> int:
        return sum(self.bytes)


def _values(values: bytes) -> dict[str, Column]:
    words = memoryview(values).cast("Q")
    n = _VALUE_WORDS
    return {
        "bytes": _u64(words, 0, n),
        "packets": _u64(words, 1, n),
        "first_seen_ns": _u64(words, 2, n),
        "last_seen_ns": _u64(words, 3, n),
        "tcp_flags": _u64(words, 4, n),
    }


def decode4(*, keys: bytes, values: bytes, names: AddressNames) -> FlowColumns:
    """Columns of a drained flows4 map (struct flow4_key: 5 u32 words per key)."""
    if not keys:
        return FlowColumns(names=names)
    size = FLOW4_KEY.size
    w32 = memoryview(keys).cast("I")
    w16 = memoryview(keys).cast("H")
    w8 = memoryview(keys)
    return FlowColumns(
        src_addr=array("I", w32[0 :: size // 4].tobytes()),
        dst_addr=array("I", w32[1 :: size // 4].tobytes()),
        src_port=array("H", w16[4 :: size // 2].tobytes()),
        dst_port=array("H", w16[5 :: size // 2].tobytes()),
        ifindex=array("I", w32[3 :: size // 4].tobytes()),
        protocol=w8[16::size].tobytes(),
        dir_code=w8[17::size].tobytes(),
        names=names,
        **_values(values),
    )


def decode6(*, keys: bytes, values: bytes, names: AddressNames) -> FlowColumns:
    """Columns of a drained flows6 map (44-byte keys: unpacked per key, then transposed)."""
    if not keys:
        return FlowColumns(names=names)
    src, dst, sport, dport, ifindex, proto, direction = zip(
        *FLOW6_KEY.iter_unpack(keys), strict=True
    )
    return FlowColumns(
        src_addr=src,
        dst_addr=dst,
        src_port=sport,
        dst_port=dport,
        ifindex=ifindex,
        protocol=proto,
        dir_code=direction,
        names=names,
        **_values(values),
    )


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
