"""A process that makes alert-listed syscalls harmlessly, then exits.

Sets its comm to ``orb8-victim`` so tests can match it. Each call is made to
fail or to change nothing: mount of a nonexistent source, ptrace PEEKDATA on
a process it does not trace, unshare(0).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

PR_SET_NAME = 15
PTRACE_PEEKDATA = 2


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--calls", default="mount,ptrace,unshare")
    args = p.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, b"orb8-victim", 0, 0, 0)
    calls = args.calls.split(",")
    for _ in range(args.repeat):
        if "mount" in calls:
            libc.mount(b"/nonexistent-orb8-src", b"/nonexistent-orb8-dst", b"orb8bogus", 0, None)
        if "ptrace" in calls:
            libc.ptrace(PTRACE_PEEKDATA, 1, None, None)
        if "unshare" in calls:
            libc.unshare(0)
        if args.interval:
            time.sleep(args.interval)
    print(os.getpid(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
