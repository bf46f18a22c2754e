"""The column decoder of the flow maps' batch buffers equals the per-flow reference decoder."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orb8_agent.dataplane.abi import FLOW4_KEY, FLOW6_KEY, FLOW_VALUE
from orb8_agent.dataplane.flowcodec import (
    AddressNames,
    FlowColumns,
    decode4,
    decode6,
    decode_rows,
)

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)


def _entry(family: int) -> st.SearchStrategy[tuple[bytes, bytes]]:
    size = 4 if family == 4 else 16
    layout = FLOW4_KEY if family == 4 else FLOW6_KEY
    key = st.builds(
        layout.pack,
        st.binary(min_size=size, max_size=size),
        st.binary(min_size=size, max_size=size),
        U16,
        U16,
        U32,
        st.integers(0, 255),
        st.integers(0, 1),
    )
    value = st.builds(FLOW_VALUE.pack, U64, U64, U64, U64, st.integers(0, 255), U64)
    return st.tuples(key, value)


def _decode(family: int, keys: bytes, values: bytes, names: AddressNames) -> FlowColumns:
    return (decode4 if family == 4 else decode6)(keys=keys, values=values, names=names)


@pytest.mark.parametrize("family", [4, 6])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_columns_equal_the_per_flow_decoder(family: int, data: st.DataObject) -> None:
    entries = data.draw(st.lists(_entry(family), max_size=40))
    keys = b"".join(k for k, _ in entries)
    values = b"".join(v for _, v in entries)
    cols = _decode(family, keys, values, AddressNames())
    assert len(cols) == len(entries)
    assert cols.rows() == decode_rows(family=family, keys=keys, values=values)


def test_a_large_mixed_batch_and_a_warm_name_cache() -> None:
    """Many flows sharing addresses, decoded twice with one cache (the second read hits it)."""
    rng = random.Random(14)
    names = AddressNames()
    both = FlowColumns()
    expected = []
    for family, layout, size in ((4, FLOW4_KEY, 4), (6, FLOW6_KEY, 16)):
        hosts = [rng.randbytes(size) for _ in range(50)]
        keys = b"".join(
            layout.pack(rng.choice(hosts), rng.choice(hosts), rng.getrandbits(16),
                        rng.getrandbits(16), rng.getrandbits(32), rng.choice((1, 6, 17, 58)),
                        rng.getrandbits(1))
            for _ in range(5000)
        )  # fmt: skip
        values = b"".join(
            FLOW_VALUE.pack(*(rng.getrandbits(64) for _ in range(4)), rng.getrandbits(8), 0)
            for _ in range(5000)
        )
        for _ in range(2):
            cols = _decode(family, keys, values, names)
            assert cols.rows() == decode_rows(family=family, keys=keys, values=values)
        both = both.extend(cols)
        expected += decode_rows(family=family, keys=keys, values=values)
    assert both.rows() == expected
    assert both.total_bytes() == sum(f.bytes for f in expected)


def test_an_empty_drain_is_no_flows() -> None:
    assert decode4(keys=b"", values=b"", names=AddressNames()).rows() == []
    assert decode6(keys=b"", values=b"", names=AddressNames()).rows() == []
