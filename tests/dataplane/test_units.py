"""Pure-Python parts of the data plane (no kernel needed), plus ABI checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from orb8_agent.dataplane import abi, libbpf
from orb8_agent.dataplane.aggregate import FlowTable, SyscallTable
from orb8_agent.dataplane.cgroupfs import cgroup2_mount
from orb8_agent.dataplane.interfaces import default_interfaces
from orb8_agent.dataplane.models import Flow, SyscallCount, tcp_flag_names, tcp_state
from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.syscall_names import name_of, nr_of
from orb8_agent.preflight import effective_capabilities
from orb8_cli.durations import InvalidDurationError
from orb8_cli.durations import parse_cli_duration as parse_duration
from orb8_cli.humanize import human_bytes, human_count
from orb8_common.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("2h", 7200),
        ("1.5s", 1.5),
        ("7", 7),
        ("1h1m1s", 3661),
        (" 3S ", 3),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "x", "-1s", "1s2", "s", "1m 30s", "1y", "1.s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(UsageError):
        parse_duration(text)


def test_parse_duration_zero_when_refused() -> None:
    with pytest.raises(InvalidDurationError, match="greater than zero"):
        parse_duration("0ms", allow_zero=False)


def test_syscall_table_facts() -> None:
    assert (nr_of(name="getpid", arch="x86_64"), nr_of(name="ptrace", arch="x86_64")) == (39, 101)
    assert (nr_of(name="mount", arch="x86_64"), nr_of(name="unshare", arch="x86_64")) == (165, 272)
    assert (nr_of(name="ptrace", arch="aarch64"), nr_of(name="mount", arch="aarch64")) == (117, 40)
    assert name_of(nr=79, arch="aarch64") == "newfstatat"
    assert name_of(nr=9999, arch="x86_64") == "syscall_9999"
    assert nr_of(name="42") == 42
    with pytest.raises(UsageError):
        nr_of(name="not_a_syscall")


def test_human_units() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(40 << 20) == "40.0 MiB"
    assert human_count(999) == "999" and human_count(12_345) == "12.3k"


def _flow(nbytes: int, flags: int = 0, port: int = 80) -> Flow:
    return Flow("10.0.0.1", "10.0.0.2", 1234, port, 6, "egress", 3, nbytes, 1, flags, 5, 9)


def test_flow_table_merges_deltas() -> None:
    t = FlowTable()
    t.add([_flow(100, abi.TCP_SYN), _flow(7, port=443)])
    t.add([_flow(50, abi.TCP_FIN)])
    top = t.top()
    assert [(f.dst_port, f.bytes, f.packets) for f in top] == [(80, 150, 2), (443, 7, 1)]
    assert tcp_flag_names(top[0].tcp_flags) == ["SYN", "FIN"]
    assert tcp_state(top[0].tcp_flags) == "closed" and tcp_state(0) == ""
    assert len(t) == 2 and t.total_bytes == 157 and len(t.top(limit=1)) == 1


def test_syscall_table_merges() -> None:
    t = SyscallTable()
    t.add([SyscallCount(1, 39, "getpid", 5), SyscallCount(1, 0, "read", 9)])
    t.add([SyscallCount(1, 39, "getpid", 5)])
    assert [(c.name, c.count) for c in t.top()] == [("getpid", 10), ("read", 9)]


def test_cgroup2_mount_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "25 1 0:23 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755\n"
        "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw\n"
    )
    assert cgroup2_mount(mountinfo=info) == Path("/sys/fs/cgroup/unified")
    info.write_text("25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs ro\n")
    with pytest.raises(UsageError, match="not mounted"):
        cgroup2_mount(mountinfo=info)


def test_default_interfaces(tmp_path: Path) -> None:
    for name, kind, flags in [
        ("lo", 772, "0x9"),
        ("eth0", 1, "0x1003"),
        ("veth1", 1, "0x1002"),
        ("wg0", 65534, "0x91"),
        ("cni0", 1, "0x1003"),
    ]:
        d = tmp_path / name
        d.mkdir()
        (d / "type").write_text(f"{kind}\n")
        (d / "flags").write_text(f"{flags}\n")
    assert default_interfaces(sysfs=tmp_path) == ["cni0", "eth0"]


def test_capabilities_from_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000000c000001000\n")  # NET_ADMIN, PERFMON, BPF
    assert effective_capabilities(status=status) == ["NET_ADMIN", "PERFMON", "BPF"]


@pytest.mark.kernel
def test_abi_matches_the_objects(kernel_ready: None) -> None:
    """The Python struct layouts equal the key/value sizes compiled into the probes."""
    expect = {
        "flows": {
            "flows4": (abi.FLOW4_KEY.size, abi.FLOW_VALUE.size),
            "flows6": (abi.FLOW6_KEY.size, abi.FLOW_VALUE.size),
        },
        "syscalls": {"syscall_counts": (abi.SYSCALL_COUNT_KEY.size, 8)},
    }
    for obj_name, wanted in expect.items():
        obj = libbpf.BpfObject(path=object_path(name=obj_name))
        try:
            for map_name, (ksize, vsize) in wanted.items():
                ptr = obj.map_ptr(name=map_name)
                assert libbpf.lib().bpf_map__key_size(ptr) == ksize
                assert libbpf.lib().bpf_map__value_size(ptr) == vsize
        finally:
            obj.close()
