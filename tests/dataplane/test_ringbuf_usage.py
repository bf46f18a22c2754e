"""The alert ring buffer's fill level, read from the kernel's own positions."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from orb8_agent.dataplane.abi import SYSCALL_EVENT
from orb8_agent.dataplane.syscalls import SyscallCollector
from orb8_dev.cgroups import Cgroup, cgroup

pytestmark = pytest.mark.kernel

VICTIM = [sys.executable, "-m", "orb8_dev.victim"]
RECORD = 8  # each ring-buffer record carries an 8-byte header and is 8-byte aligned


@pytest.fixture
def cg(kernel_ready: None) -> Iterator[Cgroup]:
    with cgroup(relative="kubepods.slice/pod-ringbuf") as group:
        yield group


def test_unconsumed_events_show_as_used_bytes_until_polled(cg: Cgroup) -> None:
    with SyscallCollector() as c:
        assert c.ringbuf_size == 256 * 1024
        assert c.ringbuf_used_bytes() == 0
        c.watch_cgroup(cgroup_id=cg.id)
        c.set_alert_syscalls(syscalls=["ptrace", "mount"])
        proc = cg.spawn([*VICTIM, "--calls", "ptrace,mount"], stdout=subprocess.PIPE)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        events = c.stats().events
        assert events >= 2
        record = (SYSCALL_EVENT.size + RECORD + 7) // 8 * 8
        assert c.ringbuf_used_bytes() == events * record
        got = c.poll_alerts(timeout_ms=100)
        assert len(got) == events
        assert c.ringbuf_used_bytes() == 0
