"""Batch reads of BPF hash maps: one syscall per few thousand entries."""

from __future__ import annotations

import ctypes
import errno
import struct

from orb8_common.errors import ProbeLoadError

from . import libbpf

_CHUNK = 16384


def read_batch(
    *, fd: int, key_size: int, value_size: int, delete: bool
) -> tuple[bytes, bytes, int]:
    """All entries of a hash map as (keys, values, count), packed back to back.

    With ``delete`` the entries are removed as they are read, which makes the
    map a delta since the previous read and keeps it small.
    """
    lib = libbpf.lib()
    func = lib.bpf_map_lookup_and_delete_batch if delete else lib.bpf_map_lookup_batch
    opts = libbpf.BatchOpts(sz=ctypes.sizeof(libbpf.BatchOpts))
    chunk = _CHUNK
    keys = ctypes.create_string_buffer(key_size * chunk)
    vals = ctypes.create_string_buffer(value_size * chunk)
    token_size = max(8, key_size)
    tokens = [ctypes.create_string_buffer(token_size), ctypes.create_string_buffer(token_size)]
    first = True
    key_parts: list[bytes] = []
    val_parts: list[bytes] = []
    total = 0
    while True:
        count = ctypes.c_uint32(chunk)
        in_batch = None if first else tokens[0]
        rc = func(fd, in_batch, tokens[1], keys, vals, ctypes.byref(count), ctypes.byref(opts))
        err = -rc if rc < 0 else 0
        if count.value:
            key_parts.append(ctypes.string_at(keys, count.value * key_size))
            val_parts.append(ctypes.string_at(vals, count.value * value_size))
            total += count.value
        if err == errno.ENOENT:
            break
        if err == errno.ENOSPC and not count.value:
            # one hash bucket holds more entries than the buffer: grow it
            chunk *= 2
            keys = ctypes.create_string_buffer(key_size * chunk)
            vals = ctypes.create_string_buffer(value_size * chunk)
            continue
        if err:
            raise libbpf.error(what="batch read of a BPF map", code=err)
        first = False
        tokens.reverse()
    return b"".join(key_parts), b"".join(val_parts), total


def possible_cpus() -> int:
    n = int(libbpf.lib().libbpf_num_possible_cpus())
    if n <= 0:
        raise ProbeLoadError("cannot count possible CPUs (/sys/devices/system/cpu/possible)")
    return n


def sum_percpu_array(*, fd: int, slots: int) -> list[int]:
    """Sum each slot of a BPF_MAP_TYPE_PERCPU_ARRAY of u64 across CPUs."""
    ncpu = possible_cpus()
    buf = ctypes.create_string_buffer(8 * ncpu)
    out: list[int] = []
    for idx in range(slots):
        key = ctypes.c_uint32(idx)
        libbpf.check(
            rc=libbpf.lib().bpf_map_lookup_elem(fd, ctypes.byref(key), buf), what="read stats map"
        )
        out.append(sum(v for (v,) in struct.iter_unpack("=Q", buf.raw)))
    return out


def update(*, fd: int, key: bytes, value: bytes, flags: int = libbpf.BPF_ANY) -> None:
    libbpf.check(rc=libbpf.lib().bpf_map_update_elem(fd, key, value, flags), what="update BPF map")


def delete(*, fd: int, key: bytes) -> bool:
    rc = libbpf.lib().bpf_map_delete_elem(fd, key)
    if rc == -errno.ENOENT:
        return False
    libbpf.check(rc=rc, what="delete from BPF map")
    return True


def update_batch(*, fd: int, keys: bytes, values: bytes, count: int) -> None:
    """Insert ``count`` packed entries with one syscall (used by the bench)."""
    n = ctypes.c_uint32(count)
    opts = libbpf.BatchOpts(sz=ctypes.sizeof(libbpf.BatchOpts))
    libbpf.check(
        rc=libbpf.lib().bpf_map_update_batch(fd, keys, values, ctypes.byref(n), ctypes.byref(opts)),
        what="batch update of a BPF map",
    )
