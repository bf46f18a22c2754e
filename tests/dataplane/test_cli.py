"""``orb8 trace`` and ``orb8 diagnose`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from orb8_cli.main import main
from orb8_dev import netns
from orb8_dev.cgroups import cgroup
from orb8_dev.nftcount import ETH_HLEN, ingress_counters
from orb8_dev.traffic_ctl import finish_sink, start_sink, tc_filters, traffic, warm_neighbours

ORB8 = [sys.executable, "-m", "orb8_cli.main"]
FLOW_KEYS = {
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "protocol",
    "direction",
    "bytes",
    "packets",
    "tcp_flags",
}


def _bracket(flows: list[dict[str, Any]], direction: str) -> tuple[int, int]:
    sel = [f for f in flows if f["direction"] == direction]
    return sum(f["bytes"] for f in sel), sum(f["packets"] for f in sel)


@pytest.mark.kernel
def test_trace_network_json(pair: netns.VethPair) -> None:
    """Ctrl-C ends the trace; the JSON flows match the veth's own counters.

    The veth's counters are read twice on each side of the trace: outside it
    (before the process starts, after it exits) and inside it (once the filter
    is attached, before Ctrl-C). Whatever else crosses the veth meanwhile (IPv6
    router solicitations and MLD reports of the fresh interfaces), every packet
    the trace counts lies in the outer window, and every packet of the inner
    window is counted: the flows' totals lie between the two.
    """
    warm_neighbours(pair)
    outer_before = pair.counters(side="a")
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "-i",
            pair.if_a,
            "--duration",
            "5m",
            "--output",
            "json",
            "--agent-id",
            f"cli-{pair.ns_a}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while "orb8_flows" not in tc_filters(pair.ns_a, pair.if_a):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    before = pair.counters(side="a")
    sink = start_sink(pair.ns_b, "tcp-sink", "--bind", pair.ip4_b, "--port", "6001")
    sent = traffic(
        pair.ns_a, "tcp-send", "--dst", pair.ip4_b, "--port", "6001", "--bytes", str(5 << 20)
    )
    finish_sink(sink)
    after = pair.counters(side="a")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    outer_after = pair.counters(side="a")
    assert proc.returncode == 0, err
    assert "\r" not in err  # no progress line when stderr is not a terminal
    flows = json.loads(out)
    assert flows and all(set(f) >= FLOW_KEYS for f in flows)
    # sorted by bytes, largest first
    assert [f["bytes"] for f in flows] == sorted((f["bytes"] for f in flows), reverse=True)
    top = flows[0]
    assert (top["protocol"], top["direction"], top["dst_port"]) == ("TCP", "egress", 6001)
    # The bulk flow is nearly all of the inner window's transmit, headers included.
    assert top["bytes"] == pytest.approx(after["tx_bytes"] - before["tx_bytes"], rel=0.01)
    assert top["bytes"] >= sent["sent"]
    assert {"SYN", "FIN", "ACK"} <= set(top["tcp_flags"])
    assert [f for f in flows if f["direction"] == "ingress" and f["src_port"] == 6001]
    for direction, side in (("egress", "tx"), ("ingress", "rx")):
        got_bytes, got_packets = _bracket(flows, direction)
        inner = after[f"{side}_bytes"] - before[f"{side}_bytes"]
        outer = outer_after[f"{side}_bytes"] - outer_before[f"{side}_bytes"]
        assert inner <= got_bytes <= outer, (direction, inner, got_bytes, outer)
        inner = after[f"{side}_packets"] - before[f"{side}_packets"]
        outer = outer_after[f"{side}_packets"] - outer_before[f"{side}_packets"]
        assert inner <= got_packets <= outer, (direction, inner, got_packets, outer)


@pytest.mark.kernel
def test_trace_network_table(pair: netns.VethPair) -> None:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "-i",
            pair.if_a,
            "--duration",
            "500ms",
            "--agent-id",
            f"cli-{pair.ns_a}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "SRC",
        "DST",
        "PORTS",
        "PROTO",
        "DIR",
        "BYTES",
        "PACKETS",
        "TCP",
        "RETRANS",
        "RST",
        "S/R",
        "CONNECT",
    ]


@pytest.mark.kernel
def test_trace_syscalls_json(kernel_ready: None) -> None:
    with cgroup() as cg:
        cg_id = cg.id
        victim = cg.spawn(
            [
                sys.executable,
                "-m",
                "orb8_dev.victim",
                "--calls",
                "mount",
                "--repeat",
                "1000000",  # until the trace is over: its start-up time varies with load
                "--interval",
                "0.1",
            ],
            stdout=subprocess.PIPE,
        )
        done = subprocess.run(
            [
                *ORB8,
                "trace",
                "syscalls",
                "--local",
                "--cgroup",
                str(cg.path),
                "--duration",
                "3s",
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        victim.kill()
        victim.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["cgroup_id"] == cg_id
    assert doc["seccomp_filtered_pids"] == []  # no filter: nothing to warn about
    counts = {c["syscall"]: c["count"] for c in doc["counts"]}
    assert counts["mount"] >= 1
    assert doc["alerts"] and {a["syscall"] for a in doc["alerts"]} == {"mount"}
    assert {a["comm"] for a in doc["alerts"]} == {"orb8-victim"}
    assert {a["pid"] for a in doc["alerts"]} == {victim.pid}


@pytest.mark.kernel
def test_diagnose_json(kernel_ready: None) -> None:
    done = subprocess.run(
        [*ORB8, "diagnose", "--output", "json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout
    doc = json.loads(done.stdout)
    assert doc["kernel"]["btf"] is True and doc["kernel"]["release"]
    assert {p["name"]: p["loadable"] for p in doc["probes"]} == {
        "flows": True, "syscalls": True, "tcp": True, "hostflows": True,
    }  # fmt: skip
    assert "BPF" in doc["capabilities"] or "SYS_ADMIN" in doc["capabilities"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trace", "network", "--local", "-i", "orb8-no-such-if", "-d", "1s"], "unknown interface"),
        (["trace", "network", "--local", "-d", "0s"], "greater than zero"),
        (["trace", "network", "--local", "-d", "soon"], "invalid duration"),
        (["trace", "network", "-d", "1s"], "--local"),
        (["trace", "network", "--local", "--top", "-1"], "--top"),
        (["trace", "network", "--local", "-i", "lo", "--kernel-port", "0"], "invalid port '0'"),
        (
            ["trace", "network", "--local", "-i", "lo", "--kernel-cidr", "10.1.2.3/8"],
            "--kernel-cidr '10.1.2.3/8': must be written in canonical form",
        ),
        (
            [
                "trace",
                "network",
                "--local",
                "-i",
                "lo",
                "--kernel-port",
                "53",
                "--kernel-port",
                "53",
            ],
            "--kernel-port: must not repeat entries",
        ),
        (
            ["trace", "network", "--local", "-i", "lo", "--kernel-cidr", "10.0.0.0/8"],
            "lo is not a veth",
        ),
        (["trace", "syscalls", "--local", "--cgroup", "/orb8/no/such/cgroup"], "not a cgroup"),
        (["trace", "syscalls", "--local"], "required"),
        (["trace", "syscalls", "--local", "--pid", "999999999"], "no process"),
        (
            ["trace", "syscalls", "--local", "--pid", "1", "--alert", "nosuchcall", "-d", "1s"],
            "unknown syscall",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_not_root_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["trace", "network", "--local", "-i", "lo", "-d", "1s"]) == 2
    assert "needs root" in capsys.readouterr().err
    assert main(["trace", "syscalls", "--local", "--pid", str(os.getpid()), "-d", "1s"]) == 2
    assert "needs root" in capsys.readouterr().err


@pytest.mark.kernel
def test_trace_network_defaults_to_up_ethernet_interfaces(pair: netns.VethPair) -> None:
    """Inside the namespace the only up, non-loopback Ethernet device is the veth."""
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "--duration",
            "300ms",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"flows on {pair.if_a};" in done.stderr
    netns.run(["ip", "link", "set", pair.if_a, "down"], netns=pair.ns_a)
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.ns_a,
            *ORB8,
            "trace",
            "network",
            "--local",
            "--duration",
            "300ms",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no interface to trace" in done.stderr


@pytest.mark.kernel
def test_trace_syscalls_names_processes_under_a_seccomp_filter(kernel_ready: None) -> None:
    """A seccomp-refused call is invisible to the probe (tests/dataplane/test_syscalls.py):
    the trace lists the filtered processes and says so on stderr."""
    with cgroup() as cg:
        victim = cg.spawn(
            [sys.executable, "-m", "orb8_dev.victim", "--calls", "mount,ptrace",
             "--seccomp-deny", "ptrace", "--repeat", "1000000", "--interval", "0.1"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        done = subprocess.run(
            [*ORB8, "trace", "syscalls", "--local", "--cgroup", str(cg.path), "--duration", "3s",
             "--alert", "mount", "--alert", "ptrace", "--output", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        victim.kill()
        victim.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["seccomp_filtered_pids"] == [victim.pid]
    counts = {c["syscall"]: c["count"] for c in doc["counts"]}
    assert counts["mount"] >= 1 and "ptrace" not in counts
    assert {a["syscall"] for a in doc["alerts"]} == {"mount"}
    notes = [line for line in done.stderr.splitlines() if "seccomp filter" in line]
    assert len(notes) == 1 and notes[0].startswith("note: 1 traced processes"), done.stderr


def _trace_kernel_filtered(
    pair: netns.VethPair, *, flags: list[str], sends: list[tuple[str, int, int]],
    rules: dict[str, str],
) -> tuple[list[dict[str, Any]], dict[str, tuple[int, int]]]:  # fmt: skip
    """Run ``trace network --local -o json`` on if_a with ``flags`` while ns_b sends
    (dst, port, count) UDP datagrams into it: the flows, and nft's counts of ``rules``."""
    warm_neighbours(pair)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", pair.ns_a, *ORB8, "trace", "network", "--local", "-i", pair.if_a,
         "--duration", "5m", "--output", "json", "--agent-id", f"cli-{pair.ns_a}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "orb8_flows" not in tc_filters(pair.ns_a, pair.if_a):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    with ingress_counters(netns=pair.ns_a, interface=pair.if_a, rules=rules) as counted:
        for dst, port, count in sends:
            sink = start_sink(pair.ns_a, "udp-sink", "--bind", dst, "--port", str(port),
                              "--duration", "1")  # fmt: skip
            sent = traffic(pair.ns_b, "udp-send", "--dst", dst, "--port", str(port), "--size",
                           "100", "--count", str(count))  # fmt: skip
            finish_sink(sink)
            assert sent["sent"] == count
        oracle = counted()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    flows: list[dict[str, Any]] = json.loads(out)
    return flows, oracle


def _udp_in(flows: list[dict[str, Any]], dst: str, port: int) -> list[tuple[int, int]]:
    """(bytes, packets) of the UDP flows into ``dst``:``port`` (tc ingress on if_a)."""
    return [
        (f["bytes"], f["packets"]) for f in flows
        if f["protocol"] == "UDP" and f["direction"] == "ingress" and f["dst_ip"] == dst
        and f["dst_port"] == port
    ]  # fmt: skip


@pytest.mark.kernel
def test_trace_network_kernel_port_counts_only_that_port(pair: netns.VethPair) -> None:
    """--kernel-port 5300: the kernel counts 5300 (bytes as nft counted them), not 5302."""
    rules = {
        "p5300": f"ip daddr {pair.ip4_a} udp dport 5300",
        "p5302": f"ip daddr {pair.ip4_a} udp dport 5302",
    }
    flows, oracle = _trace_kernel_filtered(
        pair, flags=["--kernel-port", "5300"], rules=rules,
        sends=[(pair.ip4_a, 5300, 100), (pair.ip4_a, 5302, 40)],
    )  # fmt: skip
    packets, nbytes = oracle["p5300"]
    assert packets == 100 and oracle["p5302"][0] == 40
    assert _udp_in(flows, pair.ip4_a, 5300) == [(nbytes + ETH_HLEN * packets, packets)]
    assert _udp_in(flows, pair.ip4_a, 5302) == []
    # nothing else either: a port filter keeps out every packet without a listed port
    assert all(5300 in (f["src_port"], f["dst_port"]) for f in flows), flows


@pytest.mark.kernel
def test_trace_network_kernel_cidr_counts_only_that_peer(pair: netns.VethPair) -> None:
    """--kernel-cidr X/32 on a veth: the pod (ns_b) sending to X is counted, to .1 is not."""
    extra = pair.ip4_a.rsplit(".", 1)[0] + ".200"
    netns.run(["ip", "addr", "add", f"{extra}/24", "dev", pair.if_a], netns=pair.ns_a)
    assert traffic(pair.ns_b, "icmp", "--dst", extra, "--count", "1")["replies"] == 1
    rules = {
        "extra": f"ip daddr {extra} udp dport 5301",
        "own": f"ip daddr {pair.ip4_a} udp dport 5301",
    }
    flows, oracle = _trace_kernel_filtered(
        pair, flags=["--kernel-cidr", f"{extra}/32"], rules=rules,
        sends=[(extra, 5301, 70), (pair.ip4_a, 5301, 30)],
    )  # fmt: skip
    packets, nbytes = oracle["extra"]
    assert packets == 70 and oracle["own"][0] == 30
    assert _udp_in(flows, extra, 5301) == [(nbytes + ETH_HLEN * packets, packets)]
    assert _udp_in(flows, pair.ip4_a, 5301) == []
