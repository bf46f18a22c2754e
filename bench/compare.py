"""`make bench`: orb8 against the tools people use instead, in one run.

Network (veth pair between two namespaces this script makes; probes on
interface A), syscalls (getpid()/1-byte read() loops in a cgroup this script
makes), in-kernel ns per packet (BPF_PROG_TEST_RUN and bpf_stats), and the
collector. Every case runs in alternating rounds (the order reverses each
round), pinned with taskset; per-round ratios are summarised as median, min,
max and a 95% interval. Writes bench/results/latest.json and PNG plots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orb8_dev import netns
from orb8_dev.cgroups import Cgroup, cgroup
from orb8_dev.traffic_ctl import warm_neighbours

from . import alertrate, kernelcost, netload, netpeers, syspeers
from .stats import ratios, summary

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def build(*, out: Path) -> tuple[Path, Path]:
    gen, ref = out / "orb8-bench-gen", out / "reference.bpf.o"
    subprocess.run(
        ["clang", "-O2", "-Wall", "-o", str(gen), str(HERE / "dataplane_gen.c")], check=True
    )
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    subprocess.run(
        [
            "clang",
            "-g",
            "-O2",
            "-Wall",
            "-Werror",
            "-target",
            "bpf",
            f"-D__TARGET_ARCH_{arch}",
            f"-I{HERE.parent / 'bpf'}",
            "-c",
            str(HERE / "reference.bpf.c"),
            "-o",
            str(ref),
        ],
        check=True,
    )
    return gen, ref


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}


def progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# network ---------------------------------------------------------------------


def probe_variants(
    variants: dict[str, netpeers.Variant], skipped: dict[str, str]
) -> dict[str, netpeers.Variant]:
    ok = {}
    for name, v in variants.items():
        try:
            with v():
                pass
            ok[name] = v
        except netpeers.Skip as e:
            skipped[name] = str(e)
            progress(f"network variant {name} skipped: {e}")
    return ok


def bench_network(*, gen: Path, rounds: int, seconds: float, cpu: int) -> dict[str, Any]:
    skipped: dict[str, str] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    load: list[float] = []
    with (
        netns.veth_pair() as pair,
        netload.Load(pair=pair, gen=gen, cpu=cpu, seconds=seconds) as ld,
    ):
        warm_neighbours(pair)
        with netns.enter(pair.ns_a):
            variants = probe_variants(netpeers.variants(pair), skipped)
            for r in range(rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                load.append(os.getloadavg()[0])
                progress(f"network round {r + 1}/{rounds} (load {load[-1]:.1f}): {' '.join(order)}")
                for name in order:
                    with variants[name]():
                        for metric, value in ld.all().items():
                            samples.setdefault(name, {}).setdefault(metric, []).append(value)
    return {"samples": samples, "skipped": skipped, "cpu": cpu, "seconds": seconds, "load": load}


def network_ratios(net: dict[str, Any]) -> dict[str, Any]:
    """variant/none per round (throughput: higher is better; latency: lower is better),
    and orb8/peer per round for every peer."""
    s = net["samples"]
    out: dict[str, Any] = {"vs_none": {}, "orb8_vs": {}}
    metrics = [*netload.THROUGHPUT, *netload.LATENCY]
    for name in s:
        out["vs_none"][name] = {
            m: summary(values=ratios(num=s[name][m], den=s["none"][m])) for m in metrics
        }
    if "orb8" in s:
        for peer in s:
            if peer != "orb8":
                out["orb8_vs"][peer] = {
                    m: summary(values=ratios(num=s["orb8"][m], den=s[peer][m])) for m in metrics
                }
    return out


# syscalls --------------------------------------------------------------------


def gated(cmd: list[str], where: Cgroup) -> subprocess.Popen[str]:
    """Start ``cmd`` held at a gate (one byte on stdin) inside ``where``."""
    gate = "import os,sys; os.read(0, 1); os.execvp(sys.argv[1], sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", gate, *cmd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    where.add(pid=proc.pid)
    return proc


def sys_sample(
    v: syspeers.SysVariant, *, gen: Path, loop: str, calls: int, cpu: int, cg: Cgroup
) -> float:
    cmd = [
        *v.prefix,
        "taskset",
        "-c",
        str(cpu),
        str(gen),
        loop,
        str(max(1000, calls // v.calls_divisor)),
    ]
    proc = gated(cmd, cg)
    try:
        with v.attach(proc.pid):
            out, err = proc.communicate(input="g", timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{v.name} {loop} loop failed: {err[-300:]}")
    # CPU time per call: on a loaded machine wall time mostly measures preemption
    return float(json.loads(out.strip().splitlines()[-1])["cpu_ns_per_call"])


def bench_syscalls(
    *, gen: Path, ref: Path, rounds: int, calls: int, cpus: list[int]
) -> dict[str, Any]:
    skipped: dict[str, str] = {}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    load: list[float] = []
    with cgroup() as watched, cgroup() as unwatched:
        variants = syspeers.variants(reference=ref, watched=watched)
        usable = []
        for v in variants:
            try:
                sys_sample(v, gen=gen, loop="getpid", calls=1000, cpu=cpus[0], cg=watched)
                usable.append(v)
            except netpeers.Skip as e:
                skipped[v.name] = str(e)
                progress(f"syscall variant {v.name} skipped: {e}")
        for cpu in cpus:
            for r in range(rounds):
                order = usable if r % 2 == 0 else list(reversed(usable))
                load.append(os.getloadavg()[0])
                progress(f"syscalls cpu {cpu} round {r + 1}/{rounds} (load {load[-1]:.1f})")
                for v in order:
                    for loop in ("getpid", "read"):
                        ns = sys_sample(
                            v,
                            gen=gen,
                            loop=loop,
                            calls=calls,
                            cpu=cpu,
                            cg=watched if v.watched else unwatched,
                        )
                        per = samples.setdefault(f"cpu{cpu}", {}).setdefault(loop, {})
                        per.setdefault(v.name, []).append(ns)
    return {"samples": samples, "skipped": skipped, "calls": calls, "load": load}


def syscall_ratios(sc: dict[str, Any]) -> dict[str, Any]:
    """Added ns over `none` per round, and the ratios the targets are about."""
    out: dict[str, Any] = {}
    for cpu, loops in sc["samples"].items():
        for loop, s in loops.items():
            added = {
                name: [a - b for a, b in zip(vals, s["none"], strict=True)]
                for name, vals in s.items()
            }
            entry: dict[str, Any] = {
                "ns_per_call": {n: summary(values=v) for n, v in s.items()},
                "added_ns": {n: summary(values=v) for n, v in added.items()},
                "ratios": {},
            }
            pairs = [
                ("orb8_raw_tp_unwatched", "empty_raw_tp"),
                ("orb8_tp_btf_unwatched", "empty_tp_btf"),
                ("orb8_raw_tp_watched", "syscount"),
                ("orb8_tp_btf_watched", "syscount"),
                ("orb8_raw_tp_watched", "bpftrace"),
                ("orb8_tp_btf_watched", "bpftrace"),
            ]
            for num, den in pairs:
                if num in added and den in added:
                    entry["ratios"][f"{num}/{den}"] = summary(
                        values=ratios(num=added[num], den=added[den])
                    )
            out.setdefault(cpu, {})[loop] = entry
    return out


# collector -------------------------------------------------------------------


def bench_collector(*, sizes: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sizes:
        progress(f"collector at {n} flows")
        done = subprocess.run(
            [sys.executable, "-m", "bench.dataplane_collector", "--flows", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[str(n)] = json.loads(done.stdout)
    return out


# main ------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds, short samples: for development")
    p.add_argument("--rounds", type=int, help="network rounds (default 15, quick 3)")
    p.add_argument("--sys-rounds", type=int, help="syscall rounds per CPU (default 10, quick 2)")
    p.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="network CPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--only",
        choices=["kernel", "network", "syscalls", "collector", "alerts"],
        action="append",
    )
    p.add_argument("--replot", action="store_true", help="only redraw table and plots from --out")
    args = p.parse_args()
    if args.replot:
        return finish(json.loads((args.out / "latest.json").read_text()), out=args.out)
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    quick = args.quick
    rounds = args.rounds or (3 if quick else 15)
    sys_rounds = args.sys_rounds or (2 if quick else 10)
    only = set(args.only or ["kernel", "network", "syscalls", "collector", "alerts"])
    work = Path(tempfile.mkdtemp(prefix="orb8-bench-"))
    gen, ref = build(out=work)
    res: dict[str, Any] = {}
    if args.only and (args.out / "latest.json").exists():
        # re-running some sections: keep the others from the previous run
        res = json.loads((args.out / "latest.json").read_text())
        res.setdefault("rerun", []).append(
            {
                "sections": sorted(only),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "load_before": os.getloadavg(),
            }
        )
    res |= {
        "machine": machine(),
        "mode": "quick" if quick else "full",
    }
    if not args.only or "started" not in res:
        res["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        res["load_before"] = os.getloadavg()
    if "kernel" in only:
        progress("in-kernel cost per packet")
        res["kernel"] = kernelcost.bench(
            reference=ref,
            gen=gen,
            rounds=3 if quick else 10,
            repeat=200_000 if quick else 1_000_000,
            seconds=0.5 if quick else 1.0,
        )
    if "network" in only:
        net = bench_network(gen=gen, rounds=rounds, seconds=0.5 if quick else 1.0, cpu=args.cpu)
        net["ratios"] = network_ratios(net)
        res["network"] = net
        save(res, out=args.out)
    if "syscalls" in only:
        sc = bench_syscalls(
            gen=gen,
            ref=ref,
            rounds=sys_rounds,
            calls=200_000 if quick else 1_000_000,
            cpus=list(range(os.cpu_count() or 1)),
        )
        sc["ratios"] = syscall_ratios(sc)
        res["syscalls"] = sc
        save(res, out=args.out)
    if "collector" in only:
        res["collector"] = bench_collector(sizes=[1_000, 10_000, 100_000])
    if "alerts" in only:
        progress("alert rate: without loss, and where loss starts")
        ncpu = os.cpu_count() or 1
        res["alerts"] = alertrate.bench(
            gen=gen, seconds=0.5 if quick else 1.0, cpus=(0, 1 if ncpu > 1 else 0)
        )
    res["load_after"] = os.getloadavg()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save(res, out=args.out)
    return finish(res, out=args.out)


def save(res: dict[str, Any], *, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(res, indent=1) + "\n")


def finish(res: dict[str, Any], *, out: Path) -> int:
    from . import plots, report

    print(report.table(res))
    (out / "latest.md").write_text(report.markdown(res))
    for path in plots.draw(res, out=out):
        progress(f"wrote {path}")
    progress(f"wrote {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
