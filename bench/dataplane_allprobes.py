"""`make bench-dataplane`, all probes together: what the DNS and TCP health probes add.

Live, on one veth pair between two namespaces, the probes attached as the
agent attaches them (one agent id; tc filters on interface A, both hooks;
TCP health on its tracepoints with both namespaces watched). Variants:

* ``none``: nothing attached
* ``noop``: the empty tc program on both hooks (the floor of the tc hook)
* ``flows``: the flow probe
* ``flows_dns``: the flow probe and the DNS probe
* ``flows_dns_tcp``: the flow probe, the DNS probe and the TCP health probe

Workloads, namespace A to B (bench/dataplane_gen.c, C so the generator's own
cost stays small): TCP bulk (bits/s), 64-byte UDP (packets/s), DNS A
queries over UDP/53 to a resolver stand-in, one at a time (answers/s), and
TCP connect + close (connections/s, the TCP health probe's events). Rounds
interleave the variants and reverse their order every round; ratios are
taken per round, against ``none`` and against ``flows``.

Beside them: one pass of the full stack with ``kernel.bpf_stats_enabled``
(live ns per program run on DNS packets and per connection), the in-kernel
ns per frame of the DNS probe (bench.dnscost, BPF_PROG_TEST_RUN) and the
TCP health probe's ns per event (bench.tcphealth). All traffic stays inside
the namespaces this module creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orb8_agent.dataplane.dns import DnsCollector
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.tcphealth import TcpHealthCollector, TcpHook
from orb8_dev import netns
from orb8_dev.traffic_ctl import start_sink, warm_neighbours

from . import dnscost, tcphealth
from .dataplane import noop_tc, tcp_run
from .kernelcost import run_stats, stats_enabled
from .stats import ratios, summary

RESULTS = Path(__file__).resolve().parent / "results" / "dataplane_allprobes.json"
AGENT = "bench-all"
VARIANTS = ("none", "noop", "flows", "flows_dns", "flows_dns_tcp")
# the figures each round reports, higher is better for every one; "_per_cpu"
# is per CPU-second of the client thread (tc egress programs and the client's
# socket events run in its context; time it spends preempted by other load
# does not count, so these are the steadier figures on a shared machine)
WORKLOADS = (
    "tcp_bps",
    "udp_pps",
    "udp_pps_per_cpu",
    "dns_qps",
    "dns_qps_per_cpu",
    "crr_cps",
    "crr_cps_per_cpu",
)
DNS_PORT, CRR_PORT, UDP_PORT = 53, 6001, 6000


@dataclass
class Probes:
    flows: FlowCollector
    dns: DnsCollector | None
    tcp: TcpHealthCollector | None


@contextlib.contextmanager
def probe_stack(pair: netns.VethPair, *, dns: bool, tcp: bool) -> Iterator[Probes]:
    """The flow probe, and the DNS and TCP health probes if asked, as the agent sets them up."""
    with contextlib.ExitStack() as stack:
        # removed last: the collectors' state files live in it until they close
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orb8-bench-all-")))
        flows = stack.enter_context(FlowCollector(agent_id=AGENT, run_dir=run_dir))
        flows.attach(interface=pair.if_a)
        probes = Probes(flows=flows, dns=None, tcp=None)
        if dns:
            probes.dns = stack.enter_context(DnsCollector(agent_id=AGENT, run_dir=run_dir))
            probes.dns.attach(interface=pair.if_a)
        if tcp:
            probes.tcp = stack.enter_context(
                TcpHealthCollector(hook=TcpHook.TP_BTF, agent_id=AGENT)
            )
            probes.tcp.set_watched_netns(
                inodes={os.stat(netns.NETNS_DIR / n).st_ino for n in (pair.ns_a, pair.ns_b)}
            )
        yield probes
        # drain as the agent would, so no map stays full into the next variant
        flows.read_flows()
        if probes.dns is not None:
            probes.dns.read_rows()
        if probes.tcp is not None:
            probes.tcp.read()


def variants(
    pair: netns.VethPair,
) -> dict[str, Callable[[], contextlib.AbstractContextManager[Any]]]:
    return {
        "none": contextlib.nullcontext,
        "noop": lambda: noop_tc(pair.if_a),
        "flows": lambda: probe_stack(pair, dns=False, tcp=False),
        "flows_dns": lambda: probe_stack(pair, dns=True, tcp=False),
        "flows_dns_tcp": lambda: probe_stack(pair, dns=True, tcp=True),
    }


@contextlib.contextmanager
def gen_server(ns: str, gen: Path, *args: str) -> Iterator[None]:
    """A dataplane_gen server in ``ns``, up once it says it listens; killed after the block."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, str(gen), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if '"listening"' not in line:
            raise RuntimeError(f"{args[0]} did not start: {line!r}")
        yield
    finally:
        proc.kill()
        proc.communicate()


def gen_json(pair: netns.VethPair, gen: Path, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(netns.run([str(gen), *args], netns=pair.ns_a))
    return out


def dns_run(pair: netns.VethPair, gen: Path, seconds: float) -> dict[str, Any]:
    return gen_json(pair, gen, "dns", pair.ip4_b, str(DNS_PORT), str(seconds))


def crr_run(pair: netns.VethPair, gen: Path, seconds: float) -> dict[str, Any]:
    return gen_json(pair, gen, "crr", pair.ip4_b, str(CRR_PORT), str(seconds))


def udp64_run(pair: netns.VethPair, gen: Path, seconds: float) -> dict[str, Any]:
    # 22 bytes of payload + 8 UDP + 20 IPv4 + 14 Ethernet = 64-byte frames (as bench.dataplane)
    return gen_json(pair, gen, "udp", pair.ip4_b, str(UDP_PORT), str(seconds), "22")


def one_variant(pair: netns.VethPair, gen: Path, seconds: float) -> dict[str, float]:
    udp = udp64_run(pair, gen, seconds)
    dns = dns_run(pair, gen, seconds)
    if dns["answers"] == 0:
        raise RuntimeError(f"the DNS workload got no answers: {dns}")
    crr = crr_run(pair, gen, seconds)
    return {
        "tcp_bps": tcp_run(pair, seconds),
        "udp_pps": float(udp["packets_per_second"]),
        "udp_pps_per_cpu": float(udp["packets_per_cpu_second"]),
        "dns_qps": float(dns["queries_per_second"]),
        "dns_qps_per_cpu": float(dns["queries_per_cpu_second"]),
        "crr_cps": float(crr["connections_per_second"]),
        "crr_cps_per_cpu": float(crr["connections_per_cpu_second"]),
    }


def _delta(fds: dict[str, int], run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], Any]:
    """Run ``run`` and return (program -> ns/run and runs over it, what ``run`` returned)."""
    before = {name: run_stats(fd) for name, fd in fds.items()}
    out = run()
    per: dict[str, Any] = {}
    for name, fd in fds.items():
        ns, cnt = (a - b for a, b in zip(run_stats(fd), before[name], strict=True))
        per[name] = {"runs": cnt, "ns_total": ns, "ns_per_run": ns / cnt if cnt else 0.0}
    return per, out


def live_costs(pair: netns.VethPair, gen: Path, seconds: float) -> dict[str, Any]:
    """The full stack once with bpf_stats on: ns per program run on live DNS and connect traffic.

    Also what the probes counted against what the workload did (its oracle).
    """
    with probe_stack(pair, dns=True, tcp=True) as probes, stats_enabled():
        assert probes.dns is not None and probes.tcp is not None
        fds = {
            "flows_egress": probes.flows.prog_fd(direction="egress"),
            "flows_ingress": probes.flows.prog_fd(direction="ingress"),
            "dns": probes.dns.prog_fd,
            **{f"tcp_{tp}": fd for tp, fd in probes.tcp.prog_fds().items()},
        }
        probes.tcp.read()
        dns_before = probes.dns.stats()
        dns_progs, dns_work = _delta(fds, lambda: dns_run(pair, gen, seconds))
        dns_after = probes.dns.stats()
        crr_progs, crr_work = _delta(fds, lambda: crr_run(pair, gen, seconds))
        rows = probes.tcp.read()
    tcp_ns = sum(v["ns_total"] for k, v in crr_progs.items() if k.startswith("tcp_"))
    made = int(crr_work["connections"])
    return {
        "dns_workload": {
            "workload": dns_work,
            "programs": dns_progs,
            "dns_probe_ns_per_packet": dns_progs["dns"]["ns_per_run"],
            "queries_counted": dns_after.queries - dns_before.queries,
            "answers_counted": dns_after.answers - dns_before.answers,
        },
        "crr_workload": {
            "workload": crr_work,
            "programs": crr_progs,
            "tcp_probe_ns_per_connection": tcp_ns / made if made else 0.0,
            # both ends are watched: each connection is one active open, counted once
            "connects_counted": sum(r.connects for r in rows),
        },
    }


def bench_live(gen: Path, *, rounds: int, seconds: float) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {w: {v: [] for v in VARIANTS} for w in WORKLOADS}
    load: list[float] = []
    with netns.veth_pair() as pair:
        # a sink so UDP gets no ICMP errors back; killed at the end
        sink = start_sink(
            pair.ns_b, "udp-sink", "--bind", pair.ip4_b, "--port", str(UDP_PORT),
            "--duration", str(rounds * len(VARIANTS) * (4 * seconds + 5) + 60),
        )  # fmt: skip
        try:
            warm_neighbours(pair)
            with (
                gen_server(pair.ns_b, gen, "dns-server", str(DNS_PORT)),
                gen_server(pair.ns_b, gen, "crr-server", str(CRR_PORT)),
                netns.enter(pair.ns_a),
            ):
                modes = variants(pair)
                for r in range(rounds):
                    load.append(os.getloadavg()[0])
                    for name in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
                        with modes[name]():
                            for w, value in one_variant(pair, gen, seconds).items():
                                samples[w][name].append(value)
                live = live_costs(pair, gen, seconds)
                load.append(os.getloadavg()[0])
        finally:
            sink.kill()
            sink.wait()
    out: dict[str, Any] = {"samples": samples, "load_1m": load, "live_bpf_stats": live}
    for w, per in samples.items():
        out[w] = {
            "value": {v: summary(values=per[v]) for v in VARIANTS},
            "over_none": {
                v: summary(values=ratios(num=per[v], den=per["none"])) for v in VARIANTS[1:]
            },
            "over_flows": {
                v: summary(values=ratios(num=per[v], den=per["flows"])) for v in VARIANTS[3:]
            },
            # what the TCP health probe adds on top of the other two
            "tcp_over_flows_dns": summary(
                values=ratios(num=per["flows_dns_tcp"], den=per["flows_dns"])
            ),
        }
    return out


def bench_isolated(*, rounds: int, connects: int) -> dict[str, Any]:
    """The DNS probe per frame (bench.dnscost) and TCP health per event (bench.tcphealth)."""
    dns = dnscost.report(dnscost.measure(rounds=rounds, repeat=200_000))
    with tempfile.TemporaryDirectory(prefix="orb8-tcp-bench-") as tmp:
        floor = tcphealth.build_floor(out=Path(tmp))
        tcp = [
            tcphealth.measure(hook=TcpHook.TP_BTF, watched=watched, connects=connects, floor=floor)
            for watched in (True, False)
        ]
    return {"dns_test_run": dns, "tcp_health_events": tcp}


def run(gen: Path, *, rounds: int, seconds: float, connects: int) -> dict[str, Any]:
    started = time.time()
    load_before = os.getloadavg()
    live = bench_live(gen, rounds=rounds, seconds=seconds)
    isolated = bench_isolated(rounds=rounds, connects=connects)
    return {
        "started_unix": started,
        "seconds_taken": round(time.time() - started, 1),
        "rounds": rounds,
        "seconds_per_sample": seconds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "live": live,
        **isolated,
    }


# report ----------------------------------------------------------------------

_UNITS = {
    "tcp_bps": ("TCP bulk", "Gbit/s", 1e9),
    "udp_pps": ("UDP 64 B", "Mpps", 1e6),
    "udp_pps_per_cpu": ("UDP 64 B per CPU-s", "Mpps", 1e6),
    "dns_qps": ("DNS queries", "k answers/s", 1e3),
    "dns_qps_per_cpu": ("DNS queries per CPU-s", "k answers/s", 1e3),
    "crr_cps": ("TCP connect+close", "k conn/s", 1e3),
    "crr_cps_per_cpu": ("TCP connect+close per CPU-s", "k conn/s", 1e3),
}


def _r(s: dict[str, Any]) -> str:
    return f"{s['median']:.3f} ({s['min']:.2f} to {s['max']:.2f})" if s.get("n") else "n/a"


def report(res: dict[str, Any]) -> list[str]:
    live = res["live"]
    load = live["load_1m"]
    lines = [
        f"all probes together: {res['rounds']} rounds, {res['seconds_per_sample']} s per sample, "
        f"load average {min(load):.1f} to {max(load):.1f} (1-minute, per round)",
        "| workload | none | noop ÷ none | flows ÷ none | flows+dns ÷ none | flows+dns+tcp ÷ none "
        "| flows+dns ÷ flows | flows+dns+tcp ÷ flows | flows+dns+tcp ÷ flows+dns |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w, (title, unit, scale) in _UNITS.items():
        fig = live[w]
        cells = [f"{title} ({unit})", f"{fig['value']['none']['median'] / scale:.2f}"]
        cells += [_r(fig["over_none"][v]) for v in VARIANTS[1:]]
        cells += [_r(fig["over_flows"][v]) for v in VARIANTS[3:]]
        cells.append(_r(fig["tcp_over_flows_dns"]))
        lines.append("| " + " | ".join(cells) + " |")
    d, c = live["live_bpf_stats"]["dns_workload"], live["live_bpf_stats"]["crr_workload"]
    progs = d["programs"]
    lines.append(
        f"live, bpf_stats: DNS probe {d['dns_probe_ns_per_packet']:.0f} ns per DNS packet "
        f"({progs['dns']['runs']} runs; flow probe egress {progs['flows_egress']['ns_per_run']:.0f}"
        f", ingress {progs['flows_ingress']['ns_per_run']:.0f} ns on the same packets); "
        f"{d['workload']['queries']} queries / {d['workload']['answers']} answers sent, "
        f"{d['queries_counted']} / {d['answers_counted']} counted"
    )
    cp = c["programs"]
    lines.append(
        f"live, bpf_stats, connect+close packets: DNS probe {cp['dns']['ns_per_run']:.0f} ns "
        f"({cp['dns']['runs']} runs), flow probe egress {cp['flows_egress']['ns_per_run']:.0f}"
        f", ingress {cp['flows_ingress']['ns_per_run']:.0f} ns"
    )
    lines.append(
        f"live, bpf_stats: TCP health {c['tcp_probe_ns_per_connection']:.0f} ns per connection "
        f"({c['workload']['connections']} connect+close, {c['connects_counted']} connects counted"
        "; per run: "
        + ", ".join(
            f"{k[4:]} {v['ns_per_run']:.0f} ns x {v['runs']}"
            for k, v in c["programs"].items()
            if k.startswith("tcp_") and v["runs"]
        )
        + ")"
    )
    for frame, f in res["dns_test_run"].items():
        lines.append(
            f"test run, {frame}: DNS probe adds {f['dns_added_ns']['median']:.0f} ns "
            f"(flow probe adds {f['flows_added_ns']['median']:.0f} ns)"
        )
    for t in res["tcp_health_events"]:
        per = ", ".join(
            f"{tp} {v['ns_per_run']:.0f} ns x {v['runs']} (empty {v['floor_ns_per_run']:.0f})"
            for tp, v in t["tracepoints"].items()
            if v["runs"]
        )
        lines.append(
            f"tcp health events, {t['hook']}, {'watched' if t['watched'] else 'not watched'}: "
            f"{t['probe_ns_per_connection']:.0f} ns per connection; {per}"
        )
    return lines


def write(res: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
