"""``orb8 top SESSION``: a live terminal view of one TraceSession.

Top talkers (each pod or address with the bytes it sent and received over
the session's flows), DNS errors (when the session's status has ``dns``)
and alerts, redrawn each time the apiserver's watch reports a change
(``orb8_cli.sessionwatch``); nothing polls. The filters of ``orb8 get``
apply. ``q`` or Ctrl-C quits; the terminal is restored either way.

The screen is plain ANSI: the alternate screen, cbreak input (so Ctrl-C
still raises SIGINT), one full redraw per change or resize.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orb8_cli.filters import RowFilter, add_filter_arguments, filter_from_args
from orb8_cli.humanize import human_bytes, table
from orb8_cli.kube import current_namespace, get_session
from orb8_cli.rowkinds import ALERTS, FLOWS, endpoint, when
from orb8_cli.sessionwatch import follow_session
from orb8_cli.status import TraceSessionStatus, read_trace_status
from orb8_common.crd import TRACE_SESSIONS
from orb8_common.errors import Orb8Error, UsageError
from orb8_common.models import Alert, DnsSummary, Flow, FlowEndpoint

ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, hide the cursor
LEAVE = "\x1b[?25h\x1b[?1049l"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("top", help="live view of a TraceSession: talkers, DNS, alerts")
    parser.add_argument("session", metavar="SESSION")
    parser.add_argument("-n", "--namespace", help="the session's namespace (default: context's)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    add_filter_arguments(parser)
    parser.set_defaults(func=run)


@dataclass
class _Shared:
    """What the watch thread hands the screen: each version parsed once, redrawn as often."""

    name: str = ""
    status: TraceSessionStatus = field(default_factory=lambda: read_trace_status(body={}))
    updated: datetime | None = None
    problem: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def run(args: argparse.Namespace) -> int:
    row_filter = filter_from_args(args, kind="top", applies=FLOWS.filters)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("orb8 top needs a terminal; use orb8 get flows --watch in scripts")
    namespace = args.namespace or current_namespace(kubeconfig=args.kubeconfig)
    # Read once before touching the terminal, so a wrong name is a one-line error.
    get_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS, namespace=namespace,
                name=args.session)  # fmt: skip
    shared = _Shared()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def wake() -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(wake_w, b"x")

    def follow() -> None:
        def on_retry(line: str) -> None:
            with shared.lock:
                shared.problem = line
            wake()

        try:
            for body in follow_session(kubeconfig=args.kubeconfig, plural=TRACE_SESSIONS,
                                       namespace=namespace, name=args.session,
                                       on_retry=on_retry):  # fmt: skip
                name, status = session_name(body), read_trace_status(body=body)
                with shared.lock:
                    shared.name, shared.status = name, status
                    shared.updated, shared.problem = datetime.now(UTC), ""
                wake()
        except Orb8Error as err:
            with shared.lock:
                shared.problem = str(err)
            wake()

    threading.Thread(target=follow, name="orb8-top-watch", daemon=True).start()
    old_winch = signal.signal(signal.SIGWINCH, lambda signum, frame: wake())
    try:
        with _terminal():
            while True:
                with shared.lock:
                    screen = render(name=shared.name, status=shared.status,
                                    updated=shared.updated,
                                    problem=shared.problem, row_filter=row_filter,
                                    size=shutil.get_terminal_size())  # fmt: skip
                _draw(screen)
                ready, _, _ = select.select([sys.stdin, wake_r], [], [])
                if wake_r in ready:
                    os.read(wake_r, 4096)
                if sys.stdin in ready and "q" in os.read(sys.stdin.fileno(), 64).decode().lower():
                    return 0
    finally:
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(wake_r)
        os.close(wake_w)


@contextlib.contextmanager
def _terminal() -> Iterator[None]:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        sys.stdout.write(ENTER)
        sys.stdout.flush()
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stdout.write(LEAVE)
        sys.stdout.flush()


def _draw(lines: Sequence[str]) -> None:
    sys.stdout.write("\x1b[H" + "".join(f"{line}\x1b[K\r\n" for line in lines[:-1]))
    sys.stdout.write((lines[-1] if lines else "") + "\x1b[K\x1b[J")
    sys.stdout.flush()


def session_name(body: Mapping[str, Any]) -> str:
    """``namespace/name`` of a session's body, for the screen's head."""
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"


def render(
    *, name: str, status: TraceSessionStatus, updated: datetime | None, problem: str,
    row_filter: RowFilter, size: os.terminal_size,
) -> list[str]:  # fmt: skip
    """The screen's lines, cut to the terminal's size (the last line is the key help)."""
    summary = status.summary
    flows = FLOWS.select(status.flows, row_filter)
    alerts = ALERTS.select(status.alerts, row_filter)
    name = name or "(reading…)"
    if not problem and status.problems:
        more = len(status.problems) - 1
        problem = status.problems[0] + (f" (+{more} more)" if more else "")
    head = [
        f"orb8 top  {name}  phase {status.phase or '-'}  pods {status.matched_pods}"
        f"  nodes {summary.nodes}  flows {summary.flows}"
        f"  bytes {human_bytes(summary.bytes)}"
        f"  alerts {summary.alerts}",
        f"updated {updated.strftime('%H:%M:%S') if updated else '-'}"
        + ("" if row_filter.empty else f"  filter: {_describe(row_filter)}")
        + (f"  ! {problem}" if problem else ""),
    ]
    budget = max(3, size.lines - len(head) - 1)
    sections = [
        ("TOP TALKERS", talkers_table(flows)),
        ("DNS ERRORS", dns_errors(status.dns)),
        ("ALERTS", alerts_table(alerts)),
    ]
    share = max(2, budget // len(sections))
    lines = list(head)
    for title, body_lines in sections:
        lines.append("")
        lines.append(title)
        lines.extend(body_lines[: max(1, share - 2)])
    lines = lines[: size.lines - 1]
    lines.append("q: quit")
    return [line[: size.columns] for line in lines]


def _describe(row_filter: RowFilter) -> str:
    parts = [f"{k}={v}" for k, v in vars(row_filter).items() if v is not None]
    return " ".join(parts)


def talkers_table(flows: Sequence[Flow]) -> list[str]:
    """Each end (pod, else address) with bytes sent and received, largest first."""
    sent: dict[str, int] = {}
    received: dict[str, int] = {}
    count: dict[str, int] = {}
    peer: dict[str, dict[str, int]] = {}
    for flow in flows:
        a, b = _who(flow.source), _who(flow.destination)
        sent[a] = sent.get(a, 0) + flow.bytes
        received[b] = received.get(b, 0) + flow.bytes
        for who, other in ((a, flow.destination), (b, flow.source)):
            count[who] = count.get(who, 0) + 1
            peers = peer.setdefault(who, {})
            peers[endpoint(other)] = peers.get(endpoint(other), 0) + flow.bytes
    if not count:
        return ["no flows reported yet"]
    ranked = sorted(count, key=lambda w: (-(sent.get(w, 0) + received.get(w, 0)), w))
    rows = [
        [who, human_bytes(sent.get(who, 0)), human_bytes(received.get(who, 0)), str(count[who]),
         max(peer[who].items(), key=lambda item: (item[1], item[0]))[0]]
        for who in ranked
    ]  # fmt: skip
    return table(headers=["TALKER", "SENT", "RECEIVED", "FLOWS", "TOP PEER"], rows=rows).split("\n")


def _who(end: FlowEndpoint) -> str:
    return f"{end.namespace}/{end.pod}" if end.pod else end.ip


def alerts_table(alerts: Sequence[Alert]) -> list[str]:
    if not alerts:
        return ["no alerts"]
    never = datetime.min.replace(tzinfo=UTC)
    ranked = sorted(alerts, key=lambda r: r.last_seen or never, reverse=True)
    rows = [
        [r.severity, f"{r.namespace}/{r.pod}", r.syscall, str(r.count), r.reason, when(r.last_seen)]
        for r in ranked
    ]
    headers = ["SEVERITY", "POD", "SYSCALL", "COUNT", "REASON", "LAST SEEN"]
    return table(headers=headers, rows=rows).split("\n")


def dns_errors(dns: DnsSummary | None) -> list[str]:
    """NXDOMAIN and SERVFAIL counts, and the names answered with an error, most first."""
    if dns is None:
        return ["not reported by this session"]
    counts = [f"{label} {value}" for label, value in (
        ("nxdomain", dns.nxdomain), ("servfail", dns.servfail), ("unanswered", dns.unanswered),
    ) if value]  # fmt: skip
    failing = sorted((n for n in dns.names if n.rcode != "NOERROR"), key=lambda n: -n.count)
    rows = [
        [n.query, n.qtype, n.rcode, str(n.count), f"{n.namespace}/{n.pod}" if n.pod else ""]
        for n in failing
    ]
    lines = ["  ".join(counts)] if counts else []
    if rows:
        lines += table(headers=["QUERY", "TYPE", "RCODE", "COUNT", "POD"], rows=rows).split("\n")
    return lines or ["no DNS errors"]
