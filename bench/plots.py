"""PNG plots for `make bench` (matplotlib, from the `bench` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _bars(ax: Any, names: list[str], stats: list[dict[str, Any]], title: str, ylabel: str) -> None:
    med = [s.get("median", 0.0) for s in stats]
    lo = [s.get("median", 0.0) - s.get("min", 0.0) for s in stats]
    hi = [s.get("max", 0.0) - s.get("median", 0.0) for s in stats]
    ax.bar(range(len(names)), med, yerr=[lo, hi], capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)


def network(res: dict[str, Any], out: Path) -> Path:
    vs = res["network"]["ratios"]["vs_none"]
    metrics = list(next(iter(vs.values())))
    ncols = 5
    nrows = (len(metrics) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics, strict=False):
        names = [n for n in vs if n != "none"]
        _bars(ax, names, [vs[n][metric] for n in names], metric, "variant / none")
        ax.axhline(1.0, color="grey", linewidth=0.8)
    fig.suptitle("network: ratio to no probe per round (median, min-max bars)", fontsize=10)
    fig.tight_layout()
    path = out / "network_ratios.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def syscalls(res: dict[str, Any], out: Path) -> Path:
    cells = [
        (cpu, loop, e)
        for cpu, loops in res["syscalls"]["ratios"].items()
        for loop, e in loops.items()
    ]
    fig, axes = plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.8), squeeze=False)
    for ax, (cpu, loop, e) in zip(axes[0], cells, strict=True):
        names = [n for n in e["added_ns"] if n not in ("none", "perf_trace")]
        _bars(
            ax, names, [e["added_ns"][n] for n in names], f"{loop}() on {cpu}", "added ns per call"
        )
        if "perf_trace" in e["added_ns"]:
            ax.text(
                0.02,
                0.95,
                f"perf trace -s: +{e['added_ns']['perf_trace']['median']:.0f} ns",
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
    fig.suptitle("syscalls: ns added per call over no program (median, min-max)", fontsize=10)
    fig.tight_layout()
    path = out / "syscall_ns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def kernel(res: dict[str, Any], out: Path) -> Path:
    k = res["kernel"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), squeeze=False)
    for ax, how in zip(axes[0], ("test_run", "bpf_stats"), strict=True):
        ns = k[how]["ns"]
        _bars(ax, list(ns), list(ns.values()), how, "ns per packet")
    fig.suptitle("in-kernel cost per packet (median, min-max)", fontsize=10)
    fig.tight_layout()
    path = out / "kernel_ns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def alerts(res: dict[str, Any], out: Path) -> Path:
    al = res["alerts"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for ax, name in zip(axes[0], ("default_cap", "uncapped"), strict=True):
        runs = al[name]["runs"]
        rate = [r["achieved_per_s"] for r in runs]
        ax.plot(rate, [r["received"] / r["calls"] for r in runs], "o-", label="received")
        ax.plot(rate, [r["ringbuf_full"] / r["calls"] for r in runs], "s--", label="ring buf full")
        ax.plot(rate, [r["rate_limited"] / r["calls"] for r in runs], "^:", label="rate limited")
        ax.set_xscale("log")
        ax.set_xlabel("alert-listed syscalls per second", fontsize=8)
        ax.set_ylabel("fraction of calls", fontsize=8)
        cap = "no cap" if name == "uncapped" else f"cap {al[name]['cap_per_s']}/s per cgroup"
        ax.set_title(f"alerts, {cap}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("syscall alerts: where each call ended up", fontsize=10)
    fig.tight_layout()
    path = out / "alert_rate.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(res: dict[str, Any], *, out: Path) -> list[Path]:
    done = []
    if "network" in res and res["network"]["samples"]:
        done.append(network(res, out))
    if "syscalls" in res and res["syscalls"]["samples"]:
        done.append(syscalls(res, out))
    if "kernel" in res:
        done.append(kernel(res, out))
    if "alerts" in res:
        done.append(alerts(res, out))
    return done
