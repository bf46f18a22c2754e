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
                f"decode {c.get('decode_cpu_ms', 0):.1f}); RSS {c['rss_mib']:.0f} MiB "
                f"(peak {c['peak_rss_mib']:.0f} MiB)"
            )
    return "\n".join(lines)
