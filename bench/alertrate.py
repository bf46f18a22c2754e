"""Alert rate of the syscall probe: how many alert-listed syscalls per second
reach user space with nothing lost, and the rate where loss starts.

A paced loop (bench/dataplane_gen.c ``paced``) makes getppid(), the one
syscall on the alert list, at a fixed rate from a watched cgroup, pinned to
one CPU; a reader thread on the other CPU polls the ring buffer the way the
agent does (``poll_alerts``, woken by epoll) and decodes every event into an
``Alert``. For each rate the probe's own counters say where events went:
written to the ring buffer, dropped because it was full, or dropped by the
per-cgroup cap. Two configurations: the agent's default cap (100 alerts per
second per cgroup, so loss by design starts above it) and the cap lifted, which
measures the pipeline itself (ring buffer plus Python reader).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from orb8_agent.dataplane.syscalls import Hook, SyscallCollector
from orb8_dev.cgroups import Cgroup, cgroup

DEFAULT_CAP = 100
UNCAPPED = 1 << 31


class Reader(threading.Thread):
    """Drains the alert ring buffer until told to stop, counting what it decoded."""

    def __init__(self, collector: SyscallCollector, cpu: int) -> None:
        super().__init__(daemon=True)
        self._c = collector
        self._cpu = cpu
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        os.sched_setaffinity(0, {self._cpu})
        while not self.stop.is_set():
            self.received += len(self._c.poll_alerts(timeout_ms=20))
        # what is still in the ring buffer after the loop ended
        while got := self._c.poll_alerts(timeout_ms=0):
            self.received += len(got)


def one_rate(
    *, gen: Path, where: Cgroup, cap: int, rate: float, seconds: float, cpus: tuple[int, int]
) -> dict[str, Any]:
    loop_cpu, reader_cpu = cpus
    with SyscallCollector(hook=Hook.TP_BTF, alerts_per_second=cap) as c:
        c.watch_cgroup(cgroup_id=where.id)
        c.set_alert_syscalls(syscalls=["getppid"])
        reader = Reader(c, reader_cpu)
        reader.start()
        gate = "import os,sys; os.read(0, 1); os.execvp(sys.argv[1], sys.argv[1:])"
        cmd = ["taskset", "-c", str(loop_cpu), str(gen), "paced", str(rate), str(seconds)]
        proc = subprocess.Popen(
            [sys.executable, "-c", gate, *cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        where.add(pid=proc.pid)
        out, err = proc.communicate(input="g", timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"paced loop failed: {err[-300:]}")
        reader.stop.set()
        reader.join(timeout=60)
        stats = c.stats()
    done = json.loads(out.strip().splitlines()[-1])
    calls = int(done["calls"])
    lost = calls - reader.received
    return {
        "target_per_s": rate,
        "calls": calls,
        "achieved_per_s": calls / float(done["seconds"]),
        "received": reader.received,
        "lost": lost,
        "loss_fraction": lost / calls if calls else 0.0,
        "events": stats.events,
        "ringbuf_full": stats.ringbuf_full,
        "rate_limited": stats.rate_limited,
        "lost_in_user_space": stats.lost_in_user_space,
    }


RATES = {
    "default_cap": (DEFAULT_CAP, [50.0, 90.0, 110.0, 150.0, 1000.0]),
    "uncapped": (UNCAPPED, [1e3, 5e3, 1e4, 2e4, 3e4, 5e4, 1e5]),
}


def bench(*, gen: Path, seconds: float, cpus: tuple[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": seconds, "cpus": list(cpus), "load": []}
    with cgroup() as where:
        for name, (cap, rates) in RATES.items():
            runs = []
            # the cap counts per wall-clock second: a capped run must span several
            secs = max(seconds, 3.0) if cap == DEFAULT_CAP else seconds
            for rate in rates:
                out["load"].append(os.getloadavg()[0])
                runs.append(
                    one_rate(gen=gen, where=where, cap=cap, rate=rate, seconds=secs, cpus=cpus)
                )
            lossless = [r["achieved_per_s"] for r in runs if r["lost"] == 0]
            lossy = [r["achieved_per_s"] for r in runs if r["lost"] > 0]
            out[name] = {
                "cap_per_s": cap,
                "runs": runs,
                "max_rate_without_loss": max(lossless) if lossless else None,
                "first_rate_with_loss": min(lossy) if lossy else None,
            }
    return out
