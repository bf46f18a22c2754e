"""Busy loops that hold CPU cores, to prove tests do not depend on a quiet machine.

``pytest --busy-cores N`` (and ``make test-stress``) keeps N spinning processes
at normal priority for the whole test session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

SPIN = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    pass
"""


@contextlib.contextmanager
def busy_cores(*, count: int) -> Iterator[list[int]]:
    """Run ``count`` busy loops until the block ends; yields their pids."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
