"""Loaded by the operator under ``make bench-operator`` when ORB8_BENCH_TRACEMALLOC is set.

Starts tracemalloc at interpreter start-up and, on SIGUSR2, writes the top
allocation sites (by line, and by traceback) of what is live to
``$ORB8_BENCH_TRACEMALLOC_OUT``. Tracebacks are ``$ORB8_BENCH_TRACEMALLOC_FRAMES``
deep (default 1: at 8 the spread layout's operator ran ten times slower and never
merged a status). Development tooling only: the operator knows nothing of it.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

FRAMES = int(os.environ.get("ORB8_BENCH_TRACEMALLOC_FRAMES") or 1)


def _dump(signum: int, frame: FrameType | None) -> None:
    out = Path(os.environ["ORB8_BENCH_TRACEMALLOC_OUT"])
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB", ""]
    lines.append("== by line ==")
    lines += [str(s) for s in snapshot.statistics("lineno")[:40]]
    lines += ["", "== by traceback =="]
    for stat in snapshot.statistics("traceback")[:15]:
        lines.append(f"{stat.size / 2**20:.1f} MiB in {stat.count} blocks")
        lines += [f"    {line}" for line in stat.traceback.format()]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(out)


if os.environ.get("ORB8_BENCH_TRACEMALLOC_OUT"):
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR2, _dump)
