"""`make bench-dataplane`: the data plane's cost, measured side by side in one run.

* TCP bulk throughput and 64-byte UDP packets/s over a veth pair between two
  namespaces: no probe vs an empty tc program vs the flow probe.
* getpid() ns/call: no program vs an empty program vs the syscall probe
  (unwatched and watched cgroup) on raw tracepoint, tp_btf and classic
  tracepoint hooks.
* Collector CPU time, read time and RSS at 10k and 100k flows.
* All probes together (bench/dataplane_allprobes.py): no probe, empty tc,
  flow probe, + DNS probe, + TCP health probe, on TCP bulk, 64-byte UDP, DNS
  queries and TCP connect + close; with the DNS probe's ns per frame and the
  TCP health probe's ns per event. Also written to
  bench/results/dataplane_allprobes.json.

Modes are interleaved over several rounds and the median is reported, so
background load hits all of them alike. All traffic stays inside the two
namespaces this script creates.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orb8_agent.dataplane import libbpf, tc
from orb8_agent.dataplane.flowfilter import compile_filter
from orb8_agent.dataplane.flows import EGRESS_PROG, FlowCollector
from orb8_agent.dataplane.libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS
from orb8_agent.dataplane.objects import object_path
from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_common.models import FlowFilter
from orb8_dev import netns
from orb8_dev.cgroups import cgroup
from orb8_dev.traffic_ctl import finish_sink, start_sink, traffic, warm_neighbours

HERE = Path(__file__).resolve().parent
GEN_SRC = HERE / "dataplane_gen.c"


def build_gen() -> Path:
    out = Path(tempfile.gettempdir()) / "orb8-bench-gen"
    subprocess.run(["clang", "-O2", "-Wall", "-o", str(out), str(GEN_SRC)], check=True)
    return out


# network ---------------------------------------------------------------------


@contextlib.contextmanager
def noop_tc(interface: str) -> Iterator[None]:
    """The empty tc program on both hooks, attached exactly like the flow probe."""
    obj = libbpf.BpfObject(path=object_path(name="noop"))
    for prog in ("orb8_noop_raw", "orb8_noop_tp"):
        obj.set_autoload(prog=prog, enabled=False)
    obj.load()
    ifindex = tc.ifindex_of(interface=interface)
    created = tc.create_clsact(ifindex=ifindex)
    prio = tc.priority_for(agent_id="bench-noop")
    try:
        for point in (BPF_TC_INGRESS, BPF_TC_EGRESS):
            tc.attach_filter(
                ifindex=ifindex,
                point=point,
                prog_fd=obj.prog_fd(name="orb8_noop_tc"),
                priority=prio,
            )
        yield
    finally:
        tc.remove_attachment(attachment=tc.Attachment(interface, ifindex, created), priority=prio)
        obj.close()


@contextlib.contextmanager
def flow_probe(interface: str) -> Iterator[None]:
    with FlowCollector(agent_id="bench-flows", run_dir=Path(tempfile.mkdtemp())) as c:
        c.attach(interface=interface)
        yield
        c.read_flows()


def net_modes(
    pair: netns.VethPair,
) -> dict[str, Callable[[], contextlib.AbstractContextManager[None]]]:
    return {
        "none": contextlib.nullcontext,
        "noop": lambda: noop_tc(pair.if_a),
        "flows": lambda: flow_probe(pair.if_a),
    }


def tcp_run(pair: netns.VethPair, seconds: float) -> float:
    sink = start_sink(pair.ns_b, "tcp-sink", "--bind", pair.ip4_b, "--port", "5999")
    sent = traffic(
        pair.ns_a, "tcp-send", "--dst", pair.ip4_b, "--port", "5999", "--duration", str(seconds)
    )
    finish_sink(sink)
    return float(sent["bits_per_second"])


def udp_run(pair: netns.VethPair, gen: Path, seconds: float) -> float:
    out = netns.run([str(gen), "udp", pair.ip4_b, "6000", str(seconds), "22"], netns=pair.ns_a)
    # 22 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet = 64-byte frames
    return float(json.loads(out)["packets_per_second"])


def bench_network(gen: Path, rounds: int, seconds: float) -> dict[str, Any]:
    tcp: dict[str, list[float]] = {"none": [], "noop": [], "flows": []}
    udp: dict[str, list[float]] = {"none": [], "noop": [], "flows": []}
    with netns.veth_pair() as pair:
        # a sink so UDP gets no ICMP errors back
        sink = start_sink(
            pair.ns_b,
            "udp-sink",
            "--bind",
            pair.ip4_b,
            "--port",
            "6000",
            "--duration",
            str(rounds * 3 * (seconds + 1) * 2 + 10),
        )
        try:
            warm_neighbours(pair)
            with netns.enter(pair.ns_a):
                modes = net_modes(pair)
                for r in range(rounds):
                    order = list(modes) if r % 2 == 0 else list(reversed(modes))
                    for mode in order:
                        with modes[mode]():
                            tcp[mode].append(tcp_run(pair, seconds))
                            udp[mode].append(udp_run(pair, gen, seconds))
        finally:
            sink.kill()
            sink.wait()
    return {
        "tcp_bps": {k: statistics.median(v) for k, v in tcp.items()},
        "udp_pps": {k: statistics.median(v) for k, v in udp.items()},
        "best_tcp_bps": {k: max(v) for k, v in tcp.items()},
        "best_udp_pps": {k: max(v) for k, v in udp.items()},
        "tcp_samples": tcp,
        "udp_samples": udp,
    }


def _test_packet() -> bytes:
    """10.0.0.1:40000 -> 10.0.0.2:443, TCP ACK, 100 bytes of payload."""
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        140,
        1,
        0x4000,
        64,
        6,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 5 << 4, 0x10, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + b"x" * 100


# Flow-filter states the probe can be in for the packet above (test runs see it
# on the loopback device, ifindex 1): none on the node; another interface
# filtered; this one filtered and the packet taken (port and peer CIDR match);
# this one filtered and the packet left out (no port matches). The "in maps"
# variants add a second session's filter (16 other ports, 8 other IPv4 CIDRs),
# so the lists no longer fit the interface's entry and go to the hash and trie.
LO_IFINDEX = 1
_TAKE = FlowFilter(ports=(443,), cidrs=("10.0.0.0/8",))
_LEAVE = FlowFilter(ports=(80,))
_FILLER = FlowFilter(
    ports=tuple(range(6000, 6016)), cidrs=tuple(f"192.0.2.{i}/32" for i in range(8))
)
FILTER_MODES: dict[str, dict[int, list[FlowFilter]]] = {
    "flows_tc": {},
    "flows_tc_other_if_filtered": {1000: [FlowFilter(ports=(443,))]},
    "flows_tc_filter_taken": {LO_IFINDEX: [_TAKE]},
    "flows_tc_filter_left_out": {LO_IFINDEX: [_LEAVE]},
    "flows_tc_filter_taken_in_maps": {LO_IFINDEX: [_TAKE, _FILLER]},
    "flows_tc_filter_left_out_in_maps": {LO_IFINDEX: [_LEAVE, _FILLER]},
}


def _best_ns(fd: int, pkt: bytes, repeat: int) -> float:
    return min(libbpf.test_run(prog_fd=fd, packet=pkt, repeat=repeat)[1] for _ in range(5))


def bench_test_run(
    repeat: int, *, rounds: int = 1, compare_object: Path | None = None
) -> dict[str, float]:
    """In-kernel cost per packet (BPF_PROG_TEST_RUN), free of network noise.

    Each figure is the best of 5 test runs of ``repeat`` packets, then the
    median over ``rounds`` rounds in which every variant runs once, so
    background load hits them alike. ``compare_object`` (another build's
    flows.bpf.o, e.g. main's, loaded as it is) is measured as ``flows_tc_compare``.
    """
    pkt = _test_packet()
    samples: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        noop = libbpf.BpfObject(path=object_path(name="noop"))
        stack.callback(noop.close)
        for prog in ("orb8_noop_raw", "orb8_noop_tp"):
            noop.set_autoload(prog=prog, enabled=False)
        noop.load()
        fds = {"noop_tc": noop.prog_fd(name="orb8_noop_tc")}
        if compare_object is not None:
            other = libbpf.BpfObject(path=compare_object)
            stack.callback(other.close)
            other.load()
            fds["flows_tc_compare"] = other.prog_fd(name=EGRESS_PROG)
        flows = stack.enter_context(
            FlowCollector(agent_id="bench-testrun", run_dir=Path(tempfile.mkdtemp()))
        )
        for _ in range(rounds):
            for name, fd in fds.items():
                samples.setdefault(name, []).append(_best_ns(fd, pkt, repeat))
            for mode, wanted in FILTER_MODES.items():
                compiled = {i: compile_filter(filters=f) for i, f in wanted.items()}
                flows.set_filters(filters={i: f for i, f in compiled.items() if f is not None})
                samples.setdefault(mode, []).append(
                    _best_ns(flows.prog_fd(direction="egress"), pkt, repeat)
                )
            flows.set_filters(filters={})
    result = {mode: statistics.median(values) for mode, values in samples.items()}
    if "flows_tc_compare" in samples:
        # paired per round: both ran back to back, so load cancels out of the difference
        pairs = zip(samples["flows_tc"], samples["flows_tc_compare"], strict=True)
        result["flows_tc_minus_compare"] = statistics.median(a - b for a, b in pairs)
    return result


def test_run_report(tr: dict[str, float]) -> list[str]:
    noop = tr["noop_tc"]
    lines = [
        f"in-kernel cost per packet (BPF_PROG_TEST_RUN): noop-tc {noop:.0f} ns,"
        f" flows {tr['flows_tc']:.0f} ns -> flow probe adds {tr['flows_tc'] - noop:.0f} ns"
    ]
    if "flows_tc_compare" in tr:
        lines.append(
            f"  compared object (no filter): {tr['flows_tc_compare']:.0f} ns"
            f" -> this build adds {tr['flows_tc_minus_compare']:+.1f} ns"
            " (median of the per-round differences)"
        )
    for mode in FILTER_MODES:
        if mode != "flows_tc":
            lines.append(
                f"  {mode}: {tr[mode]:.0f} ns ({tr[mode] - tr['flows_tc']:+.0f} ns vs no filter)"
            )
    return lines


# syscalls --------------------------------------------------------------------


@contextlib.contextmanager
def noop_sys(hook: Hook) -> Iterator[None]:
    prog = {Hook.RAW_TP: "orb8_noop_raw", Hook.TRACEPOINT: "orb8_noop_tp"}[hook]
    obj = libbpf.BpfObject(path=object_path(name="noop"))
    for other in ("orb8_noop_tc", "orb8_noop_raw", "orb8_noop_tp"):
        obj.set_autoload(prog=other, enabled=other == prog)
    obj.load()
    link = obj.attach(prog=prog)
    try:
        yield
    finally:
        link.destroy()
        obj.close()


@contextlib.contextmanager
def syscall_probe(hook: Hook, watch: int) -> Iterator[None]:
    with SyscallCollector(hook=hook) as c:
        c.watch_cgroup(cgroup_id=watch)
        c.set_alert_syscalls(syscalls=["ptrace", "mount"])
        yield


def getpid_ns(gen: Path, cg_path: Path | None, calls: int) -> float:
    cmd = [str(gen), "getpid", str(calls)]
    if cg_path is None:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    else:
        from orb8_dev.cgroups import Cgroup

        proc = Cgroup(path=cg_path).spawn(cmd, stdout=subprocess.PIPE)
        out = proc.communicate(timeout=120)[0].decode()
    return float(json.loads(out)["ns_per_call"])


def bench_syscalls(gen: Path, rounds: int, calls: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    with cgroup() as watched, cgroup() as unwatched:
        modes: dict[str, tuple[Callable[[], contextlib.AbstractContextManager[None]], Path]] = {
            "none": (contextlib.nullcontext, unwatched.path),
            "noop_raw_tp": (functools.partial(noop_sys, Hook.RAW_TP), unwatched.path),
            "noop_tracepoint": (functools.partial(noop_sys, Hook.TRACEPOINT), unwatched.path),
        }
        for hook in Hook:
            probe = functools.partial(syscall_probe, hook, watched.id)
            modes[f"probe_{hook.value}_unwatched"] = (probe, unwatched.path)
            modes[f"probe_{hook.value}_watched"] = (probe, watched.path)
        for r in range(rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                ctx, where = modes[mode]
                with ctx():
                    samples.setdefault(mode, []).append(getpid_ns(gen, where, calls))
    return {
        "ns_per_call": {k: statistics.median(v) for k, v in samples.items()},
        "best_ns_per_call": {k: min(v) for k, v in samples.items()},
        "samples": samples,
    }


# collector -------------------------------------------------------------------


def bench_collector() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (10_000, 100_000):
        done = subprocess.run(
            [sys.executable, "-m", "bench.dataplane_collector", "--flows", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[str(n)] = json.loads(done.stdout)
    return out


# report ----------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"nproc": str(os.cpu_count()), "cpu": model, "kernel": platform.release()}


def _net_line(title: str, unit: str, scale: float, vals: dict[str, float], target: str) -> str:
    return (
        f"{title} ({unit}): none {vals['none'] / scale:.2f}  noop-tc {vals['noop'] / scale:.2f}  "
        f"flows {vals['flows'] / scale:.2f}  -> flows/none {vals['flows'] / vals['none']:.1%}, "
        f"flows/noop {vals['flows'] / vals['noop']:.1%} (target {target})"
    )


def report(res: dict[str, Any]) -> str:
    lines = []
    m = res["machine"]
    lines.append(f"machine: nproc={m['nproc']} cpu={m['cpu']!r} kernel={m['kernel']}")
    net = res["network"]
    for kind in ("median", "best"):
        t = net["tcp_bps"] if kind == "median" else net["best_tcp_bps"]
        u = net["udp_pps"] if kind == "median" else net["best_udp_pps"]
        lines.append(f"[{kind} of {res['rounds']} rounds]")
        lines.append("  " + _net_line("TCP bulk", "Gbit/s", 1e9, t, ">= 98%"))
        lines.append("  " + _net_line("UDP 64B", "Mpps", 1e6, u, ">= 95%"))
    lines += test_run_report(res["test_run"])
    for kind, key in (("median", "ns_per_call"), ("best", "best_ns_per_call")):
        ns = res["syscalls"][key]
        base = ns["none"]
        lines.append(
            f"getpid ns/call [{kind}]: none {base:.1f}, empty raw_tp {ns['noop_raw_tp']:.1f}, "
            f"empty tracepoint {ns['noop_tracepoint']:.1f}"
        )
        for hook, noop in (
            ("raw_tp", "noop_raw_tp"),
            ("tp_btf", "noop_raw_tp"),
            ("tracepoint", "noop_tracepoint"),
        ):
            empty = ns[noop] - base
            for watch, target in (("unwatched", 2), ("watched", 3)):
                added = ns[f"probe_{hook}_{watch}"] - base
                ratio = f"{added / empty:.2f}x" if empty > 0 else "n/a (empty added <= 0)"
                lines.append(
                    f"  {hook:<10} {watch:<9}: {ns[f'probe_{hook}_{watch}']:.1f} ns, added "
                    f"{added:.1f} vs empty {empty:.1f} -> {ratio} (target <= {target}x)"
                )
    for n, c in res["collector"].items():
        lines.append(
            f"collector {int(n):>6} flows: read {c['read_wall_ms']:.1f} ms wall, "
            f"{c['read_cpu_ms']:.1f} ms CPU = {c['core_percent_at_1s']:.2f}% of a core at 1 s "
            f"interval; RSS {c['rss_mib']:.0f} MiB (peak {c['peak_rss_mib']:.0f} MiB)"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--seconds", type=float, default=0.5, help="per network sample")
    p.add_argument("--calls", type=int, default=1_000_000, help="getpid calls per sample")
    p.add_argument("--json", type=Path, help="also write raw results here")
    p.add_argument(
        "--test-run-only",
        action="store_true",
        help="only the in-kernel ns/packet (BPF_PROG_TEST_RUN), over --rounds rounds",
    )
    p.add_argument(
        "--all-probes-only",
        action="store_true",
        help="only the all-probes side by side (DNS and TCP health added to the flow probe)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 rounds, 0.2 s samples, 100k getpid calls, 50 connects;"
        " writes only --json",
    )
    p.add_argument("--connects", type=int, default=300, help="connects per TCP health event pass")
    p.add_argument(
        "--compare-object",
        type=Path,
        help="another build's flows.bpf.o, test-run side by side with this one",
    )
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.calls, args.connects = 2, 0.2, 100_000, 50
    if os.geteuid() != 0:
        print("bench-dataplane: run as root", file=sys.stderr)
        return 2
    if args.test_run_only:
        tr = bench_test_run(1_000_000, rounds=args.rounds, compare_object=args.compare_object)
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "test_run": tr}, indent=2))
        print("\n".join([f"[median of {args.rounds} rounds]", *test_run_report(tr)]))
        return 0
    # imported here: it imports this module's network helpers
    from . import dataplane_allprobes as allprobes

    gen = build_gen()
    if args.all_probes_only:
        ap = allprobes.run(gen, rounds=args.rounds, seconds=args.seconds, connects=args.connects)
        ap["machine"] = machine()
        if not args.quick:  # a smoke run leaves the recorded results alone
            allprobes.write(ap)
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "all_probes": ap}, indent=2))
        print("\n".join(allprobes.report(ap)))
        return 0
    res = {
        "machine": machine(),
        "rounds": args.rounds,
        "test_run": bench_test_run(
            1_000_000, rounds=args.rounds, compare_object=args.compare_object
        ),
        "network": bench_network(gen, args.rounds, args.seconds),
        "syscalls": bench_syscalls(gen, args.rounds, args.calls),
        "collector": bench_collector(),
        "all_probes": allprobes.run(
            gen, rounds=args.rounds, seconds=args.seconds, connects=args.connects
        ),
    }
    if not args.quick:
        allprobes.write({"machine": res["machine"], **res["all_probes"]})
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    print(report(res))
    print("\n".join(allprobes.report(res["all_probes"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
