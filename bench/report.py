"""The text table `make bench` prints from its results."""

from __future__ import annotations

from typing import Any


def _s(x: dict[str, Any], fmt: str = "{:.3f}") -> str:
    if not x or x.get("n", 0) == 0:
        return "n/a"
    ci = x.get("ci95")
    tail = f" ci95 [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else ""
    return (
        f"{fmt.format(x['median'])} (min {fmt.format(x['min'])}, max {fmt.format(x['max'])}){tail}"
    )


def table(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"machine: {m['cpu']} x{m['nproc']}, kernel {m['kernel']}; mode {res['mode']}; "
        f"load avg before {res['load_before'][0]:.1f}, "
        f"after {res.get('load_after', [float('nan')])[0]:.1f}"
    ]
    k = res.get("kernel")
    if k:
        for how in ("test_run", "bpf_stats"):
            ns = k[how]["ns"]
            lines.append(
                f"in-kernel ns/packet [{how}]: "
                + ", ".join(f"{n} {_s(v, '{:.1f}')}" for n, v in ns.items())
            )
            lines.append(
                f"  orb8/reference {_s(k[how]['orb8_over_reference'])} (target <= 1.2); "
                f"added over empty, orb8/reference {_s(k[how]['orb8_added_over_reference_added'])}"
            )
    net = res.get("network")
    if net:
        for name, why in net["skipped"].items():
            lines.append(f"network variant {name}: SKIPPED: {why}")
        lines.append("network, variant/none per round (latency: >1 is slower):")
        for name, per in net["ratios"]["vs_none"].items():
            lines.append(f"  {name}")
            for metric, s in per.items():
                lines.append(f"    {metric:<20} {_s(s)}")
        lines.append("network, orb8/peer per round:")
        for peer, per in net["ratios"]["orb8_vs"].items():
            lines.append(f"  orb8/{peer}")
            for metric, s in per.items():
                lines.append(f"    {metric:<20} {_s(s)}")
    sc = res.get("syscalls")
    if sc:
        for name, why in sc["skipped"].items():
            lines.append(f"syscall variant {name}: SKIPPED: {why}")
        for cpu, loops in sc["ratios"].items():
            for loop, e in loops.items():
                lines.append(f"syscalls {cpu} {loop}: ns/call, and added over none")
                for name, s in e["ns_per_call"].items():
                    lines.append(
                        f"  {name:<24} {_s(s, '{:.1f}')}  added {_s(e['added_ns'][name], '{:.1f}')}"
                    )
                for pair, s in e["ratios"].items():
                    lines.append(f"  ratio {pair:<40} {_s(s)}")
    col = res.get("collector")
    if col:
        for n, c in col.items():
            lines.append(
                f"collector {int(n):>6} flows: read {c['read_wall_ms']:.1f} ms wall, "
                f"{c['read_cpu_ms']:.1f} ms CPU (batch drain {c.get('batch_read_cpu_ms', 0):.1f} + "
                f"column decode {c.get('decode_cpu_ms', 0):.1f}); "
                f"with Flow objects {c.get('read_flow_objects_cpu_ms', float('nan')):.1f} ms CPU, "
                f"per-flow decoder {c.get('per_flow_decode_cpu_ms', float('nan')):.1f} ms; "
                f"RSS {c['rss_mib']:.0f} MiB (peak {c['peak_rss_mib']:.0f} MiB)"
            )
    al = res.get("alerts")
    if al:
        for name in ("default_cap", "uncapped"):
            a = al[name]
            lines.append(
                f"alerts {name} (cap {a['cap_per_s']}/s per cgroup): "
                f"max rate without loss {_rate(a['max_rate_without_loss'])}, "
                f"first rate with loss {_rate(a['first_rate_with_loss'])}"
            )
            for r in a["runs"]:
                lines.append(
                    f"  {r['achieved_per_s']:>9.0f}/s: received {r['received']}/{r['calls']}, "
                    f"ring buffer full {r['ringbuf_full']}, rate limited {r['rate_limited']}"
                )
    return "\n".join(lines)


def _rate(x: float | None) -> str:
    return "none measured" if x is None else f"{x:,.0f}/s"


def _m(x: dict[str, Any], fmt: str = "{:.2f}") -> str:
    if not x or x.get("n", 0) == 0:
        return "n/a"
    return f"{fmt.format(x['median'])} ({fmt.format(x['min'])} to {fmt.format(x['max'])})"


def _ci(x: dict[str, Any], fmt: str = "{:.3f}") -> str:
    ci = x.get("ci95") if x else None
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "n/a"


def markdown(res: dict[str, Any]) -> str:
    """The same results as Markdown tables, for docs/performance.md."""
    out: list[str] = []
    k = res.get("kernel")
    if k:
        out += [
            "| in-kernel ns per packet | empty tc | reference counter | orb8 flow probe | "
            "orb8 ÷ reference | orb8 added ÷ reference added |",
            "|---|---|---|---|---|---|",
        ]
        for how, label in (
            ("test_run", "BPF_PROG_TEST_RUN, 1,454-byte TCP frame (egress program)"),
            ("bpf_stats", "bpf_stats_enabled, live 64-byte UDP, 1 and 10k flows"),
        ):
            ns = k[how]["ns"]
            orb8 = ns.get("orb8") or ns.get("orb8_egress") or {}
            out.append(
                f"| {label} | {_m(ns['empty'], '{:.0f}')} | {_m(ns['reference'], '{:.0f}')} | "
                f"{_m(orb8, '{:.0f}')} | {_m(k[how]['orb8_over_reference'])} | "
                f"{_m(k[how]['orb8_added_over_reference_added'])} |"
            )
        out.append("")
    net = res.get("network")
    if net:
        vs = net["ratios"]["vs_none"]
        metrics = list(next(iter(vs.values())))
        names = [n for n in vs if n != "none"]
        out += [
            "| variant ÷ no probe, per round: median (min to max) | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for m in metrics:
            out.append(f"| {m} | " + " | ".join(_m(vs[n][m]) for n in names) + " |")
        out.append("")
        peers = list(net["ratios"]["orb8_vs"])
        out += [
            "| orb8 ÷ peer, same round: median (min to max) [95% CI of the mean] | "
            + " | ".join(peers)
            + " |",
            "|---|" + "---|" * len(peers),
        ]
        for m in metrics:
            cells = [
                f"{_m(net['ratios']['orb8_vs'][p][m])} {_ci(net['ratios']['orb8_vs'][p][m])}"
                for p in peers
            ]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    sc = res.get("syscalls")
    if sc:
        for cpu, loops in sc["ratios"].items():
            for loop, e in loops.items():
                out += [
                    f"| {loop}() on {cpu}: variant | ns per call (CPU) | added over none |",
                    "|---|---|---|",
                ]
                for name, s in e["ns_per_call"].items():
                    out.append(
                        f"| {name} | {_m(s, '{:.0f}')} | {_m(e['added_ns'][name], '{:.0f}')} |"
                    )
                for pair, s in e["ratios"].items():
                    out.append(f"| ratio of added ns: {pair} | | {_m(s)} |")
                out.append("")
    col = res.get("collector")
    if col:
        out += [
            "| flows | read (drain + column decode), wall | CPU | of which batch drain "
            "| of which column decode | read with one Flow object per flow, CPU "
            "| per-flow decoder alone, CPU | RSS (peak) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        nan = float("nan")
        for n, c in col.items():
            out.append(
                f"| {int(n):,} | {c['read_wall_ms']:.1f} ms | {c['read_cpu_ms']:.1f} ms | "
                f"{c.get('batch_read_cpu_ms', nan):.1f} ms | "
                f"{c.get('decode_cpu_ms', nan):.1f} ms | "
                f"{c.get('read_flow_objects_cpu_ms', nan):.1f} ms | "
                f"{c.get('per_flow_decode_cpu_ms', nan):.1f} ms | "
                f"{c['rss_mib']:.0f} MiB ({c['peak_rss_mib']:.0f} MiB) |"
            )
        out.append("")
    al = res.get("alerts")
    if al:
        out += [
            "| alert cap per cgroup | paced getppid() rate | received by the reader "
            "| ring buffer full | rate limited |",
            "|---|---|---|---|---|",
        ]
        for name in ("default_cap", "uncapped"):
            a = al[name]
            cap = "none" if name == "uncapped" else f"{a['cap_per_s']}/s"
            for r in a["runs"]:
                out.append(
                    f"| {cap} | {r['achieved_per_s']:,.0f}/s | {r['received']:,} of "
                    f"{r['calls']:,} | {r['ringbuf_full']:,} | {r['rate_limited']:,} |"
                )
        out.append("")
        for name in ("default_cap", "uncapped"):
            a = al[name]
            out.append(
                f"- {name.replace('_', ' ')}: highest rate without loss "
                f"{_rate(a['max_rate_without_loss'])}, lowest rate with loss "
                f"{_rate(a['first_rate_with_loss'])}"
            )
    return "\n".join(out) + "\n"
