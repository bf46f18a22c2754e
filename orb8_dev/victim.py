"""A process that makes alert-listed syscalls harmlessly, then exits.

Sets its comm to ``orb8-victim`` so tests can match it. Each call is made to
fail or to change nothing: mount of a nonexistent source, ptrace PEEKDATA on
a process it does not trace, unshare(0).

``--seccomp-deny CALLS`` first installs a seccomp filter that refuses those
calls with EPERM (as a runtime's default profile does), and ``--errnos``
prints each call's last errno to stderr (``ptrace=ESRCH``): the oracle of
whether a call ran in the kernel or was refused by seccomp. ``--hold`` keeps
the process alive after its calls until its stdin closes.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
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
    p.add_argument("--seccomp-deny", default="", metavar="CALLS")
    p.add_argument("--errnos", action="store_true")
    p.add_argument("--hold", action="store_true", help="then wait until stdin closes")
    args = p.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, b"orb8-victim", 0, 0, 0)
    if args.seccomp_deny:
        from orb8_dev.seccomp import deny

        deny(syscalls=args.seccomp_deny.split(","))
    calls = args.calls.split(",")
    errnos: dict[str, int] = {}

    def call(name: str, result: int) -> None:
        errnos[name] = ctypes.get_errno() if result == -1 else 0

    for _ in range(args.repeat):
        if "mount" in calls:
            call("mount", libc.mount(b"/nonexistent-orb8-src", b"/nonexistent-orb8-dst",
                                     b"orb8bogus", 0, None))  # fmt: skip
        if "ptrace" in calls:
            ctypes.set_errno(0)  # PEEKDATA may return -1 as data: errno tells
            libc.ptrace(PTRACE_PEEKDATA, 1, None, None)
            errnos["ptrace"] = ctypes.get_errno()
        if "unshare" in calls:
            call("unshare", libc.unshare(0))
        if args.interval:
            time.sleep(args.interval)
    if args.errnos:
        line = " ".join(
            f"{k}={errno.errorcode.get(v, v) if v else 'OK'}" for k, v in errnos.items()
        )
        print(line, file=sys.stderr, flush=True)
    print(os.getpid(), flush=True)
    if args.hold:
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
