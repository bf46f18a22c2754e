"""A workload with a steady, known syscall mix, steered through its stdin.

Every tick (``--tick`` seconds) it sleeps (``clock_nanosleep``), tries a
non-blocking read of stdin (``read``, usually EAGAIN) and calls ``getppid``
``--steady`` times: nothing else, so a learned baseline of it is exact.
Lines on stdin change that:

- ``new``: one ``getpriority``, a syscall the steady loop never makes;
- ``burst N``: ``N`` more ``getppid`` calls at once (a rate spike);
- end of input: exit.

Nothing is written back (a ``write`` would be a syscall outside the steady
mix); tests watch orb8's status instead. Used by tests/e2e/test_baseline.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tick", type=float, default=0.05)
    parser.add_argument("--steady", type=int, default=20)
    args = parser.parse_args()
    os.set_blocking(0, False)
    pending = b""
    while True:
        time.sleep(args.tick)
        try:
            chunk = os.read(0, 4096)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            return 0
        for _ in range(args.steady):
            os.getppid()
        if not chunk:
            continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            word, _, arg = line.decode().strip().partition(" ")
            if word == "new":
                os.getpriority(os.PRIO_PROCESS, 0)
            elif word == "burst":
                for _ in range(int(arg)):
                    os.getppid()


if __name__ == "__main__":
    sys.exit(main())
