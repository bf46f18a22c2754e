"""False-positive rate of the learned syscall baseline on benign workloads (root).

Three workloads run side by side, each in its own cgroup v2 directory that
the real syscall probe watches:

- ``web``: ``python -m http.server`` under load from four client threads
  outside the cgroup (files of several sizes, some 404s, random think time);
- ``pip``: a package install in a loop: a fresh venv, then
  ``pip install --no-index --find-links WHEELHOUSE requests`` (the wheels are
  downloaded once from the package registry into ``~/.cache/orb8/wheelhouse``);
- ``pytest``: part of this repository's unit tests in a loop.

The per-(cgroup, syscall) counts are drained every second, exactly as the
agent does, and recorded raw. The recording is then replayed through the
agent's own model (``orb8_agent.control.baseline.Baselines``) for several
window lengths, learning periods and thresholds: the FP rate is the fraction
of judged (post-learning) windows in which a workload raised any baseline
alert (``not seen during learning`` or ``rate spike``). Nothing here is a
test: the figures go into docs/syscall-baseline.md with the machine they ran on.

    make bench-baseline                      # records 15 min, then replays
    make bench-baseline BENCH_ARGS="--replay build/baseline_fp_samples.json"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orb8_agent.control.baseline import Baselines, SpikeRule
from orb8_agent.dataplane.syscalls import SyscallCollector
from orb8_dev.cgroups import Cgroup, cgroup

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = Path(os.environ.get("ORB8_CACHE", Path.home() / ".cache/orb8")) / "wheelhouse"
RESULTS = REPO / "bench/results/baseline_fp.json"  # the summary, kept in git
RECORDING = REPO / "build/baseline_fp_samples.json"  # the raw counts, for --replay
WORKLOADS = ("web", "pip", "pytest")
PYTEST_TARGETS = ("tests/agent/test_baseline.py", "tests/operator/test_models.py")

Samples = list[dict[str, Any]]  # {"t": seconds since start, "counts": {workload: {name: n}}}


def _wheelhouse() -> Path:
    if not any(WHEELHOUSE.glob("requests-*.whl")):
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELHOUSE), "requests"],
            check=True,
        )
    return WHEELHOUSE


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _web_client(port: int, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    names = ["small.txt", "page.html", "big.bin", "missing.txt"]
    while not stop.is_set():
        name = rng.choices(names, weights=[5, 5, 2, 1])[0]
        url = f"http://127.0.0.1:{port}/{name}"
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=5) as resp,
        ):
            resp.read()
        stop.wait(rng.uniform(0.0, 0.02))


def _frozen_copy(tmp: Path) -> Path:
    """The code the pytest workload runs, copied once: edits made meanwhile do not change it."""
    dest = tmp / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.bpf.o")
    for name in ("orb8_common", "orb8_agent", "orb8_operator", "orb8_cli", "orb8_dev", "tests"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


@contextlib.contextmanager
def _workloads(cgroups: Mapping[str, Cgroup], tmp: Path) -> Iterator[None]:
    site = tmp / "site"
    site.mkdir()
    (site / "small.txt").write_text("hello\n")
    (site / "page.html").write_text("<html>" + "x" * 20_000 + "</html>")
    (site / "big.bin").write_bytes(os.urandom(1_000_000))
    port = _free_port()
    devnull = subprocess.DEVNULL
    procs = [
        cgroups["web"].spawn(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(site)], stdout=devnull, stderr=devnull,
        ),
        cgroups["pip"].spawn(
            ["bash", "-c", f"while true; do rm -rf {tmp}/venv; {sys.executable} -m venv "
             f"{tmp}/venv && {tmp}/venv/bin/pip install -q --no-index --find-links "
             f"{_wheelhouse()} requests; done"], stdout=devnull, stderr=devnull,
        ),
        cgroups["pytest"].spawn(
            ["bash", "-c", f"cd {_frozen_copy(tmp)} && while true; do {sys.executable} -m pytest "
             f"-q -p no:cacheprovider {' '.join(PYTEST_TARGETS)}; done"],
            stdout=devnull, stderr=devnull, env={**os.environ, "PYTHONPATH": str(tmp / "repo")},
        ),
    ]  # fmt: skip
    stop = threading.Event()
    clients = [
        threading.Thread(target=_web_client, args=(port, stop, seed), daemon=True)
        for seed in range(4)
    ]
    for client in clients:
        client.start()
    try:
        yield
    finally:
        stop.set()
        for proc in procs:
            proc.kill()
            proc.wait()
        for client in clients:
            client.join(timeout=10)


def record(*, seconds: float) -> Samples:
    """Run the workloads for ``seconds``; the counts drained every second."""
    samples: Samples = []
    with contextlib.ExitStack() as stack:
        cgroups = {n: stack.enter_context(cgroup(relative=f"bench-{n}")) for n in WORKLOADS}
        by_id = {cg.id: name for name, cg in cgroups.items()}
        collector = stack.enter_context(SyscallCollector())
        for cg in cgroups.values():
            collector.watch_cgroup(cgroup_id=cg.id)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orb8-fp-")))
        stack.enter_context(_workloads(cgroups, tmp))
        start = time.monotonic()
        next_tick = start
        while time.monotonic() - start < seconds:
            next_tick += 1.0
            time.sleep(max(0.0, next_tick - time.monotonic()))
            counts: dict[str, dict[str, int]] = {name: {} for name in WORKLOADS}
            for count in collector.read_counts():
                workload = by_id.get(count.cgroup_id)
                if workload is not None:
                    counts[workload][count.name] = counts[workload].get(count.name, 0) + count.count
            samples.append({"t": round(time.monotonic() - start, 3), "counts": counts})
            done = len(samples)
            if done % 60 == 0:
                print(f"  recorded {done} s of {seconds:.0f}", flush=True)
    return samples


@dataclass(frozen=True)
class Setting:
    window: float
    learn: float
    factor: float = 10
    min_count: int = 1000
    warmup: float = 5.0  # the session starts this long after the workloads


@dataclass
class Outcome:
    judged: int = 0
    alerted: int = 0
    not_seen: int = 0
    spikes: int = 0
    syscalls: dict[str, int] | None = None

    @property
    def rate(self) -> float:
        return self.alerted / self.judged if self.judged else 0.0


def replay(*, samples: Sequence[Mapping[str, Any]], workload: str, setting: Setting) -> Outcome:
    """Feed one workload's recorded counts through the agent's model."""
    key = ("bench", workload, "main")
    model = Baselines(
        learning_period=setting.learn, window=setting.window,
        rule=SpikeRule(factor=setting.factor, min_count=setting.min_count), now=setting.warmup,
    )  # fmt: skip
    model.track(containers={key: 1}, now=setting.warmup)
    out = Outcome(syscalls={})
    assert out.syscalls is not None
    for sample in samples:
        t = float(sample["t"])
        if t <= setting.warmup:
            continue
        model.add(key=key, counts=sample["counts"][workload].items())
        result = model.close_due(now=t)
        if result is None or not result.judged:
            continue
        out.judged += 1
        if result.findings:
            out.alerted += 1
        for _, finding in result.findings:
            if finding.reason == "rate spike":
                out.spikes += 1
            else:
                out.not_seen += 1
            tag = f"{finding.syscall} ({finding.reason})"
            out.syscalls[tag] = out.syscalls.get(tag, 0) + 1
    return out


SETTINGS = (
    Setting(window=15, learn=120),  # the defaults: reportInterval 15s
    Setting(window=5, learn=120),
    Setting(window=1, learn=120),
    Setting(window=15, learn=60),
    Setting(window=15, learn=120, factor=5, min_count=200),
)


def report(*, samples: Samples, meta: Mapping[str, Any]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for setting in SETTINGS:
        for workload in WORKLOADS:
            outcome = replay(samples=samples, workload=workload, setting=setting)
            rows.append({
                "workload": workload, "window_s": setting.window, "learn_s": setting.learn,
                "spike_factor": setting.factor, "spike_min_count": setting.min_count,
                "judged_windows": outcome.judged, "windows_with_alert": outcome.alerted,
                "fp_rate": round(outcome.rate, 4), "not_seen": outcome.not_seen,
                "rate_spikes": outcome.spikes, "causes": outcome.syscalls,
            })  # fmt: skip
    print(
        "| workload | window | learning | factor / floor | judged windows | with an alert "
        "| FP rate | causes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        causes = ", ".join(f"{k} x{v}" for k, v in sorted(r["causes"].items())) or "-"
        print(f"| {r['workload']} | {r['window_s']:g} s | {r['learn_s']:g} s "
              f"| {r['spike_factor']:g} / {r['spike_min_count']} | {r['judged_windows']} "
              f"| {r['windows_with_alert']} | {100 * r['fp_rate']:.1f}% | {causes} |")  # fmt: skip
    return {"meta": dict(meta), "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=900.0, help="recording length")
    parser.add_argument("--replay", type=Path, help="replay a saved recording instead")
    parser.add_argument("--out", type=Path, default=RESULTS, help="summary (JSON)")
    parser.add_argument("--recording", type=Path, default=RECORDING, help="raw counts (JSON)")
    args = parser.parse_args(argv)
    if args.replay:
        saved = json.loads(args.replay.read_text())
        samples, meta = saved["samples"], saved["meta"]
    else:
        print(f"recording {args.seconds:.0f} s of web, pip and pytest workloads", flush=True)
        samples = record(seconds=args.seconds)
        meta = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}",
            "load_1m_at_end": round(os.getloadavg()[0], 2),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": args.seconds,
        }
        args.recording.parent.mkdir(parents=True, exist_ok=True)
        args.recording.write_text(json.dumps({"meta": meta, "samples": samples}) + "\n")
        print(f"wrote {args.recording}")
    summary = report(samples=samples, meta=meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
