"""What the probes can read: packet headers and syscall numbers, never
payloads, syscall arguments or file contents (docs/security.md).

Three checks: the helpers each compiled object calls (no helper that reads
user memory), the syscall alert record (48 bytes: times, ids, number, comm)
and a live alert from a process whose syscall arguments carry a marker.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from orb8_agent.dataplane.abi import SYSCALL_EVENT
from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_dev.cgroups import Cgroup, cgroup

# Helper ids (include/uapi/linux/bpf.h) that can copy memory a syscall's
# arguments point to, or file paths: none of them may appear.
USER_MEMORY_HELPERS = {
    4: "bpf_probe_read",
    45: "bpf_probe_read_str",
    112: "bpf_probe_read_user",
    114: "bpf_probe_read_user_str",
    147: "bpf_d_path",
    148: "bpf_copy_from_user",
    176: "bpf_copy_from_user_task",
}
# Everything each probe calls, named. A new helper must be added here on purpose.
ALLOWED = {
    "syscalls": {
        1: "bpf_map_lookup_elem",
        2: "bpf_map_update_elem",
        5: "bpf_ktime_get_ns",
        14: "bpf_get_current_pid_tgid",
        16: "bpf_get_current_comm",
        80: "bpf_get_current_cgroup_id",
        113: "bpf_probe_read_kernel",  # CO-RE read of the classic tracepoint's syscall id
        131: "bpf_ringbuf_reserve",
        132: "bpf_ringbuf_submit",
        # tp_btf: the current task, for task->cgroups->dfl_cgrp->kn->id through
        # BTF (kernel memory the verifier types; no user memory)
        158: "bpf_get_current_task_btf",
    },
    "flows": {
        1: "bpf_map_lookup_elem",
        2: "bpf_map_update_elem",
        7: "bpf_get_prandom_u32",
        26: "bpf_skb_load_bytes",  # fixed-size header structs at header offsets
        118: "bpf_jiffies64",  # gates the clock read to once a tick per flow
        160: "bpf_ktime_get_coarse_ns",
    },
    "tcphealth": {
        1: "bpf_map_lookup_elem",
        2: "bpf_map_update_elem",
        3: "bpf_map_delete_elem",  # a connect's SYN_SENT time, once it is used
        5: "bpf_ktime_get_ns",
        # socket, skb and namespace fields (kernel memory), and the TCP and IP
        # headers of the packet a no-socket RST answers (never payload)
        113: "bpf_probe_read_kernel",
    },
}


def helper_calls(name: str) -> set[int]:
    objdump = shutil.which("llvm-objdump")
    assert objdump, "llvm-objdump is installed by `make deps` (package llvm)"
    text = subprocess.run(
        [objdump, "-d", str(object_path(name=name))], capture_output=True, text=True, check=True
    ).stdout
    calls = {int(n) for n in re.findall(r"\bcall (\d+)\b", text)}
    assert calls, f"no helper calls found in {name}.bpf.o: {text[:500]}"
    return calls


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_probes_call_only_the_helpers_they_need(name: str) -> None:
    calls = helper_calls(name)
    assert not calls & set(USER_MEMORY_HELPERS), {n: USER_MEMORY_HELPERS[n] for n in calls}
    assert calls <= set(ALLOWED[name]), sorted(calls - set(ALLOWED[name]))


def test_alert_record_is_ids_and_a_name_only() -> None:
    # ts_ns cgroup_id pid tgid nr pad comm[16]: no room for an argument or a path.
    assert SYSCALL_EVENT.format == "=QQIIIxxxx16s" and SYSCALL_EVENT.size == 48


class RecordingCollector(SyscallCollector):
    """Keeps each ring-buffer record's size and bytes as the kernel wrote them."""

    records: list[tuple[int, bytes]]

    def _on_sample(self, ctx: int | None, data: int | None, size: int) -> int:
        if data:
            self.records.append((size, ctypes.string_at(data, size)))
        return super()._on_sample(ctx, data, size)


@pytest.fixture
def watched(kernel_ready: None) -> Iterator[Cgroup]:
    with cgroup(relative="kubepods.slice/pod-privacy") as cg:
        yield cg


@pytest.mark.kernel
def test_a_live_alert_carries_no_argument_of_the_call(watched: Cgroup) -> None:
    marker = "/orb8-secret-marker-7f3a"
    code = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
        "libc.prctl(15, b'orb8-victim', 0, 0, 0);"
        f"libc.mount(b'{marker}', b'{marker}-dst', b'orb8bogus', 0, b'{marker}-data')"
    )
    c = RecordingCollector(hook=Hook.RAW_TP)
    c.records = []
    with c:
        c.watch_cgroup(cgroup_id=watched.id)
        c.set_alert_syscalls(syscalls=["mount"])
        proc = watched.spawn([sys.executable, "-c", code])
        assert proc.wait(timeout=30) == 0
        alerts = []
        for _ in range(40):
            alerts += c.poll_alerts(timeout_ms=100)
            if alerts:
                break
    assert [a.name for a in alerts] == ["mount"]
    assert alerts[0].comm == "orb8-victim"
    assert [size for size, _ in c.records] == [SYSCALL_EVENT.size]
    raw = c.records[0][1]
    assert b"orb8-secret" not in raw and b"orb8bogus" not in raw


@pytest.mark.parametrize(
    ("release", "ok"),
    [("5.10.200", False), ("5.11.0", True), ("6.1.0-rc1", True), ("4.19.0", False)],
)
def test_preflight_asks_for_the_kernel_the_probes_need(release: str, ok: bool) -> None:
    """flows.bpf.o calls bpf_ktime_get_coarse_ns (helper 160), which Linux 5.11 added."""
    from orb8_agent.preflight import _kernel_check

    assert 160 in helper_calls("flows")
    check = _kernel_check(release)
    assert check.ok is ok
    assert ok or "5.11" in check.remedy
