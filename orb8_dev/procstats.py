"""What a running process costs: resident memory, CPU time, and the BPF maps it holds.

Used by the soak (tests/e2e/test_soak.py) to watch the agent and the operator
for growth. Everything is read from outside the process, as an operator of a
node would: ``/proc/<pid>/status`` and ``stat`` for memory and CPU,
``/proc/<pid>/fdinfo`` for the BPF maps it holds open (as bpftool does), and
the maps' entries counted through the bpf syscall by map id.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
# Map types whose entries are not iterable by key (or are always full: arrays).
_NOT_COUNTED = {"ringbuf", "perf_event_array", "prog_array", "array", "percpu_array"}


def rss_bytes(*, pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ProcessLookupError(f"no VmRSS for pid {pid} (a zombie?)")


def cpu_seconds(*, pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far (its threads included)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


@dataclass(frozen=True)
class HeldMap:
    map_id: int
    name: str
    map_type: str
    key_size: int
    max_entries: int
    memlock: int  # bytes the kernel charges for the map (6.4+: its actual use)
    entries: int | None  # None for types that are not counted (arrays, ring buffers)


def _fdinfo_maps(pid: int) -> dict[int, dict[str, int]]:
    found: dict[int, dict[str, int]] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-map":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue  # closed meanwhile
        fields: dict[str, int] = {}
        for line in info.splitlines():
            key, _, value = line.partition(":")
            value = value.strip()
            if value.isdigit():
                fields[key] = int(value)
        if "map_id" in fields:
            found[fields["map_id"]] = fields
    return found


def _map_meta() -> dict[int, tuple[str, str]]:
    """map id → (name, type) for every map on the machine (one bpftool call)."""
    out = subprocess.run(
        ["bpftool", "-j", "map", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {m["id"]: (m.get("name", ""), str(m.get("type", ""))) for m in json.loads(out or "[]")}


class _Bpf:
    def __init__(self) -> None:
        self.so = ctypes.CDLL(os.environ.get("ORB8_LIBBPF", "libbpf.so.1"), use_errno=True)
        self.so.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
        self.so.bpf_map_get_fd_by_id.restype = ctypes.c_int
        self.so.bpf_map_get_next_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.so.bpf_map_get_next_key.restype = ctypes.c_int


_BPF: _Bpf | None = None


def count_entries(*, map_id: int, key_size: int, limit: int) -> int:
    """Keys in map ``map_id``, walking at most ``limit`` of them.

    The owner may delete entries while this walks (the agent drains its flow
    map); a deleted current key restarts the walk, so the count is capped at
    ``limit`` (the map's max_entries) and is a snapshot, not exact.
    """
    global _BPF
    bpf = _BPF = _BPF or _Bpf()
    fd = bpf.so.bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        raise OSError(-fd, f"map {map_id}: {os.strerror(-fd)}")
    try:
        keys = [ctypes.create_string_buffer(max(key_size, 1)) for _ in range(2)]
        count = 0
        current: ctypes.Array[ctypes.c_char] | None = None
        while count < limit:
            rc = bpf.so.bpf_map_get_next_key(fd, current, keys[1])
            if rc == -errno.ENOENT:
                break
            if rc < 0:
                raise OSError(-rc, f"map {map_id}: {os.strerror(-rc)}")
            count += 1
            keys.reverse()
            current = keys[0]
        return count
    finally:
        os.close(fd)


def held_maps(*, pid: int) -> list[HeldMap]:
    """The BPF maps ``pid`` holds open, each with its live entry count."""
    fdinfo = _fdinfo_maps(pid)
    meta = _map_meta()
    out: list[HeldMap] = []
    for map_id, fields in sorted(fdinfo.items()):
        name, map_type = meta.get(map_id, ("", ""))
        entries = None
        if map_type not in _NOT_COUNTED:
            try:
                entries = count_entries(
                    map_id=map_id, key_size=fields.get("key_size", 0),
                    limit=fields.get("max_entries", 0),
                )  # fmt: skip
            except OSError:
                entries = None  # freed between the listing and the walk
        out.append(
            HeldMap(
                map_id=map_id, name=name, map_type=map_type, key_size=fields.get("key_size", 0),
                max_entries=fields.get("max_entries", 0), memlock=fields.get("memlock", 0),
                entries=entries,
            )
        )  # fmt: skip
    return out
