"""Nothing stays behind: after close, on SIGTERM, and after SIGKILL (next start)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orb8_agent.dataplane import tc
from orb8_agent.dataplane.abi import FLOW4_KEY, FLOW_LAYOUT, FLOW_VALUE
from orb8_agent.dataplane.dns import DNS_MAPS, DnsCollector
from orb8_agent.dataplane.dns_abi import DNS_KEY, DNS_LAYOUT, DNS_VALUE
from orb8_agent.dataplane.flows import FLOW_MAPS, FlowCollector
from orb8_agent.dataplane.libbpf import BPF_TC_INGRESS
from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_dev import netns
from orb8_dev.traffic_ctl import (
    bpf_link_prog_ids,
    bpf_prog_ids,
    gone,
    has_clsact,
    own_bpf_prog_ids,
    tc_filters,
    traffic,
    warm_neighbours,
)

pytestmark = pytest.mark.kernel

ORB8 = [sys.executable, "-m", "orb8_cli.main"]


def test_close_removes_filters_qdisc_and_programs(
    pair: netns.VethPair, run_dir: Path, agent_id: str
) -> None:
    with netns.enter(pair.ns_a):
        c = FlowCollector(agent_id=agent_id, run_dir=run_dir)
        c.open()
        c.attach(interface=pair.if_a)
        ifindex = tc.ifindex_of(interface=pair.if_a)
        prog_id = tc.query_filter(ifindex=ifindex, point=BPF_TC_INGRESS, priority=c.tc_priority)
        assert prog_id is not None and prog_id in bpf_prog_ids(name_prefix="orb8_flows")
        assert "orb8_flows" in tc_filters(pair.ns_a, pair.if_a)
        assert has_clsact(pair.ns_a, pair.if_a)
        c.close()
    assert tc_filters(pair.ns_a, pair.if_a) == ""
    assert not has_clsact(pair.ns_a, pair.if_a)
    assert gone({prog_id}, name_prefix="orb8_flows")
    assert not (run_dir / agent_id).exists()


def test_existing_clsact_and_foreign_filters_are_kept(
    pair: netns.VethPair, run_dir: Path, agent_id: str
) -> None:
    netns.run(["tc", "qdisc", "add", "dev", pair.if_a, "clsact"], netns=pair.ns_a)
    netns.run(
        [
            "tc",
            "filter",
            "add",
            "dev",
            pair.if_a,
            "ingress",
            "prio",
            "7",
            "handle",
            "1",
            "bpf",
            "da",
            "obj",
            str(object_path(name="noop")),
            "sec",
            "tc",
        ],
        netns=pair.ns_a,
    )
    with netns.enter(pair.ns_a), FlowCollector(agent_id=agent_id, run_dir=run_dir) as c:
        c.attach(interface=pair.if_a)
        assert "orb8_flows" in tc_filters(pair.ns_a, pair.if_a)
    left = tc_filters(pair.ns_a, pair.if_a)
    assert "orb8_flows" not in left and "orb8_noop_tc" in left
    assert has_clsact(pair.ns_a, pair.if_a)


@pytest.mark.parametrize("hook", [Hook.RAW_TP, Hook.TRACEPOINT], ids=["raw_tp", "tracepoint"])
def test_syscall_probe_close_removes_link_and_program(kernel_ready: None, hook: Hook) -> None:
    with SyscallCollector(hook=hook):
        during = own_bpf_prog_ids(name_prefix="orb8_sys_enter")
        assert len(during) == 1
        if hook is Hook.RAW_TP:
            assert during <= bpf_link_prog_ids()
    assert gone(during, name_prefix="orb8_sys_enter")
    assert not during & bpf_link_prog_ids()


def _wait_for_filter(pair: netns.VethPair, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while "orb8_flows" not in tc_filters(pair.ns_a, pair.if_a):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "orb8 trace never attached"
        time.sleep(0.1)


def _trace_cmd(pair: netns.VethPair, agent_id: str, duration: str) -> list[str]:
    return [
        "ip",
        "netns",
        "exec",
        pair.ns_a,
        *ORB8,
        "trace",
        "network",
        "--local",
        "--interface",
        pair.if_a,
        "--duration",
        duration,
        "--agent-id",
        agent_id,
        "--output",
        "json",
    ]


def test_sigterm_detaches(pair: netns.VethPair, agent_id: str) -> None:
    proc = subprocess.Popen(
        _trace_cmd(pair, agent_id, "60s"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for_filter(pair, proc)
    # ip netns exec execs in place, so proc.pid is the orb8 process itself
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.decode().lstrip().startswith("[")
    assert tc_filters(pair.ns_a, pair.if_a) == ""
    assert not has_clsact(pair.ns_a, pair.if_a)


def test_sigkill_leftovers_are_swept_by_next_start(pair: netns.VethPair, agent_id: str) -> None:
    proc = subprocess.Popen(
        _trace_cmd(pair, agent_id, "60s"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_filter(pair, proc)
    with netns.enter(pair.ns_a):
        ifindex = tc.ifindex_of(interface=pair.if_a)
        prog_id = tc.query_filter(
            ifindex=ifindex, point=BPF_TC_INGRESS, priority=tc.priority_for(agent_id=agent_id)
        )
    proc.kill()
    proc.wait()
    # the dead run's filter and program are still there
    assert "orb8_flows" in tc_filters(pair.ns_a, pair.if_a)
    assert prog_id in bpf_prog_ids(name_prefix="orb8_flows")

    done = subprocess.run(_trace_cmd(pair, agent_id, "200ms"), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert tc_filters(pair.ns_a, pair.if_a) == ""
    assert not has_clsact(pair.ns_a, pair.if_a)
    assert gone({prog_id}, name_prefix="orb8_flows")
    assert not (tc.DEFAULT_RUN_DIR / agent_id).exists()


def test_second_agent_with_same_id_is_refused(
    pair: netns.VethPair, run_dir: Path, agent_id: str
) -> None:
    proc = subprocess.Popen(
        _trace_cmd(pair, agent_id, "30s"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_filter(pair, proc)
        done = subprocess.run(_trace_cmd(pair, agent_id, "1s"), capture_output=True, timeout=60)
        assert done.returncode == 1
        assert b"in use by running pid" in done.stderr
        # the refused run did not disturb the running one
        assert "orb8_flows" in tc_filters(pair.ns_a, pair.if_a)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert tc_filters(pair.ns_a, pair.if_a) == ""


def test_default_cli_runs_sweep_each_others_leftovers(pair: netns.VethPair) -> None:
    """Without --agent-id each trace has its own id; a later one cleans up a killed one."""
    cmd = [
        "ip",
        "netns",
        "exec",
        pair.ns_a,
        *ORB8,
        "trace",
        "network",
        "--local",
        "--interface",
        pair.if_a,
        "--output",
        "json",
        "--duration",
    ]
    proc = subprocess.Popen([*cmd, "60s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_filter(pair, proc)
    proc.kill()
    proc.wait()
    assert (tc.DEFAULT_RUN_DIR / f"cli-{proc.pid}" / "tc.json").is_file()
    done = subprocess.run([*cmd, "200ms"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert tc_filters(pair.ns_a, pair.if_a) == ""
    assert not has_clsact(pair.ns_a, pair.if_a)
    assert not (tc.DEFAULT_RUN_DIR / f"cli-{proc.pid}").exists()


def test_the_flow_map_is_pinned_while_open_and_a_clean_close_unpins(
    kernel_ready: None, run_dir: Path, agent_id: str
) -> None:
    """With a pin directory the flow map is pinned on load (so a killed agent's unreported
    flows survive for the next one: tests/e2e/test_agent.py); close() removes the pin, since a
    clean stop has reported everything."""
    pins = Path("/sys/fs/bpf") / f"orb8-test-{agent_id}"
    try:
        c = FlowCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pins)
        c.open()
        pinned = [pins / agent_id / name for name in FLOW_MAPS.values()]
        assert all(p.exists() for p in pinned)
        c.close()
        assert not any(p.exists() for p in pinned) and not (pins / agent_id).exists()
    finally:
        _remove_tree(pins)


def _remove_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    if root.exists():
        root.rmdir()


def _pin_map(path: Path, *, key: int, value: int, entries: int) -> None:
    """A map pinned at ``path`` holding one entry whose bytes are all 0x01."""
    run = ["bpftool", "map"]
    subprocess.run(
        [*run, "create", str(path), "type", "lru_hash", "key", str(key), "value", str(value),
         "entries", str(entries), "name", "old_flows"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*run, "update", "pinned", str(path), "key", *["1"] * key, "value", *["1"] * value],
        check=True, capture_output=True,
    )  # fmt: skip


def test_flow_maps_pinned_by_another_layout_are_replaced_not_misread(
    pair: netns.VethPair, run_dir: Path, agent_id: str
) -> None:
    """An upgrade finds the maps an agent of an older layout pinned: the one-map layout
    (40-byte keys, 40-byte values, pinned as "flows") and a map of today's sizes pinned under
    another layout version. Both are dropped (their bytes would be misread) and the probe
    counts into fresh maps, which read back only this run's traffic."""
    pins = Path("/sys/fs/bpf") / f"orb8-test-{agent_id}"
    old = pins / agent_id / "flows"
    same_size = pins / agent_id / f"flows4_v{FLOW_LAYOUT - 1}"
    # other probes' maps pinned in the same directory (TCP health's, DNS's)
    neighbour = pins / agent_id / "tcp_health"
    dns_rows = pins / agent_id / DNS_MAPS["dns_rows"]
    try:
        old.parent.mkdir(parents=True)
        _pin_map(old, key=40, value=40, entries=131072)
        _pin_map(same_size, key=FLOW4_KEY.size, value=FLOW_VALUE.size, entries=131072)
        _pin_map(neighbour, key=8, value=8, entries=16)
        _pin_map(dns_rows, key=DNS_KEY.size, value=DNS_VALUE.size, entries=16)
        with netns.enter(pair.ns_a):
            c = FlowCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pins)
            c.open()
        try:
            assert not old.exists() and not same_size.exists()
            assert neighbour.exists(), "the flow probe removed another probe's pinned map"
            assert dns_rows.exists(), "the flow probe removed the DNS probe's pinned map"
            assert all((pins / agent_id / name).exists() for name in FLOW_MAPS.values())
            with netns.enter(pair.ns_a):
                assert c.read_flows() == []
                warm_neighbours(pair)
                c.attach(interface=pair.if_a)
            traffic(
                pair.ns_a, "udp-send", "--dst", pair.ip4_b, "--port", "5600", "--size", "10",
                "--count", "7",
            )  # fmt: skip
            with netns.enter(pair.ns_a):
                flows = c.read_flows()
            assert [(f.dst_port, f.packets) for f in flows if f.dst_port == 5600] == [(5600, 7)]
            # nothing of the old maps' all-0x01 entries came through
            assert all(f.bytes != 0x0101010101010101 for f in flows)
        finally:
            with netns.enter(pair.ns_a):
                c.close()
    finally:
        _remove_tree(pins)


def test_without_a_bpffs_the_flow_probe_loads_unpinned(
    kernel_ready: None, run_dir: Path, agent_id: str, tmp_path: Path
) -> None:
    c = FlowCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=tmp_path / "not-bpffs")
    c.open()
    try:
        assert not (tmp_path / "not-bpffs" / agent_id / "flows4_v2").exists()
    finally:
        c.close()


def test_dns_maps_pinned_by_another_layout_are_replaced_and_other_probes_pins_kept(
    pair: netns.VethPair, run_dir: Path, agent_id: str
) -> None:
    """The DNS probe pins dns_rows/dns_inflight under its layout version next to the flow
    and TCP health probes' pins. On open it drops only DNS pins of another layout; on a
    clean close it removes only its own pins, so the others' survive both."""
    pins = Path("/sys/fs/bpf") / f"orb8-test-{agent_id}"
    directory = pins / agent_id
    old = directory / f"dns_rows_v{DNS_LAYOUT - 1}"
    others = [directory / name for name in (*FLOW_MAPS.values(), "tcp_health")]
    try:
        directory.mkdir(parents=True)
        _pin_map(old, key=DNS_KEY.size, value=DNS_VALUE.size, entries=16384)
        for path in others:
            _pin_map(path, key=8, value=8, entries=16)
        with netns.enter(pair.ns_a):
            c = DnsCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pins)
            c.open()
        try:
            assert not old.exists()
            assert all((directory / name).exists() for name in DNS_MAPS.values())
            assert all(p.exists() for p in others), "the DNS probe removed another probe's pin"
            # nothing of the old map's all-0x01 entry comes through
            with netns.enter(pair.ns_a):
                assert c.read_rows() == []
        finally:
            with netns.enter(pair.ns_a):
                c.close()
        assert not any((directory / name).exists() for name in DNS_MAPS.values())
        assert all(p.exists() for p in others), "the DNS probe's close removed another's pin"
    finally:
        _remove_tree(pins)


@pytest.mark.parametrize("probe", ["flows", "dns"])
def test_without_a_bpffs_a_probe_loads_unpinned_and_attaches(
    pair: netns.VethPair, run_dir: Path, agent_id: str, tmp_path: Path, probe: str
) -> None:
    """A pin directory that is no bpffs (the host's /sys/fs/bpf not mounted in): the probe
    loads unpinned, keeps its state file, and attaches and detaches as usual."""
    pin_dir = tmp_path / "not-bpffs"
    with netns.enter(pair.ns_a):
        c: FlowCollector | DnsCollector = (
            FlowCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pin_dir)
            if probe == "flows"
            else DnsCollector(agent_id=agent_id, run_dir=run_dir, pin_dir=pin_dir)
        )
        c.open()
        try:
            c.attach(interface=pair.if_a)
            assert f"orb8_{probe}" in tc_filters(pair.ns_a, pair.if_a)
        finally:
            c.close()
    assert tc_filters(pair.ns_a, pair.if_a) == ""
    assert not any(p.is_file() for p in pin_dir.rglob("*"))
