"""In-kernel cost per event of the TCP health probe's tracepoint programs.

BPF_PROG_TEST_RUN does not run tracing programs, so the cost is read from
kernel.bpf_stats_enabled (run_time_ns / run_cnt of each program) while a real
workload runs between two namespaces of a veth pair: graceful connects and
closes, refused connects (an RST each way), and a transfer that loses one
data packet in eight on arrival (nft), so the kernel retransmits.

Two passes per hook flavour (tp_btf, raw_tp): with both namespaces watched
(every event is counted into the map) and with none watched (the cost every
other socket on the node pays: the namespace test, then return). Empty
tp_btf programs on the same five tracepoints (bench/tcp_floor.bpf.c) run
side by side in every pass: the floor each figure is also given against,
as a ratio, so a busy machine moves both alike.

    python -m bench.tcphealth [--rounds 3] [--connects 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.tcphealth import TRACEPOINTS, TcpHealthCollector, TcpHook
from orb8_dev import netns

from .kernelcost import run_stats, stats_enabled

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "tcphealth.json"
FLOOR_PROGS = {
    "tcp_retransmit_skb": "floor_retransmit",
    "tcp_retransmit_synack": "floor_retransmit_synack",
    "tcp_send_reset": "floor_send_reset",
    "tcp_receive_reset": "floor_receive_reset",
    "inet_sock_set_state": "floor_state",
}


def build_floor(*, out: Path) -> Path:
    obj = out / "tcp_floor.bpf.o"
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    subprocess.run(
        ["clang", "-g", "-O2", "-Wall", "-Werror", "-target", "bpf", f"-D__TARGET_ARCH_{arch}",
         f"-I{HERE.parent / 'bpf'}", "-c", str(HERE / "tcp_floor.bpf.c"), "-o", str(obj)],
        check=True,
    )  # fmt: skip
    return obj


def _in(ns: str) -> socket.socket:
    with netns.enter(ns):
        return socket.socket()


def _sink(ns: str, ip: str) -> tuple[socket.socket, int]:
    listener = _in(ns)
    listener.bind((ip, 0))
    listener.listen(512)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_drain, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def _drain(conn: socket.socket) -> None:
    with conn:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass


def workload(*, pair: netns.VethPair, port: int, closed: int, connects: int) -> int:
    """Run the mixed workload; returns the connections it made (refused included)."""
    for _ in range(connects):
        c = _in(pair.ns_a)
        c.connect((pair.ip4_b, port))
        c.close()
    for _ in range(connects):
        c = _in(pair.ns_a)
        with contextlib.suppress(ConnectionRefusedError):
            c.connect((pair.ip4_b, closed))
        c.close()
    data = os.urandom(1 << 20)
    for _ in range(4):
        c = _in(pair.ns_a)
        c.connect((pair.ip4_b, port))
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        c.settimeout(60)
        c.recv(1)
        c.close()
    return 2 * connects + 4


def measure(*, hook: TcpHook, watched: bool, connects: int, floor: Path) -> dict[str, Any]:
    with netns.veth_pair() as pair:
        rules = (
            "table inet o8b {\n chain in { type filter hook input priority 0; policy accept;\n"
            f"  ip saddr {pair.ip4_a} meta length > 200 numgen random mod 8 == 0 drop\n }}\n}}\n"
        )
        subprocess.run(["ip", "netns", "exec", pair.ns_b, "nft", "-f", "-"], input=rules,
                       text=True, check=True, capture_output=True)  # fmt: skip
        listener, port = _sink(pair.ns_b, pair.ip4_b)
        closed_sock = _in(pair.ns_b)
        closed_sock.bind((pair.ip4_b, 0))
        closed = closed_sock.getsockname()[1]
        empty = libbpf.BpfObject(path=floor)
        links: list[libbpf.Link] = []
        try:
            empty.load()
            links = [empty.attach(prog=prog) for prog in FLOOR_PROGS.values()]
            floor_fds = {tp: empty.prog_fd(name=prog) for tp, prog in FLOOR_PROGS.items()}
            with TcpHealthCollector(hook=hook) as c, stats_enabled():
                if watched:
                    inodes = {os.stat(netns.NETNS_DIR / n).st_ino for n in (pair.ns_a, pair.ns_b)}
                    c.set_watched_netns(inodes=inodes)
                fds = c.prog_fds()
                start = {tp: run_stats(fd) for tp, fd in fds.items()}
                fstart = {tp: run_stats(fd) for tp, fd in floor_fds.items()}
                t0 = time.monotonic()
                made = workload(pair=pair, port=port, closed=closed, connects=connects)
                time.sleep(1.0)  # let the last retransmit timers fire before reading
                wall = time.monotonic() - t0
                end = {tp: run_stats(fd) for tp, fd in fds.items()}
                fend = {tp: run_stats(fd) for tp, fd in floor_fds.items()}
                rows = c.read()
        finally:
            for link in links:
                link.destroy()
            empty.close()
            listener.close()
            closed_sock.close()
    per_tp: dict[str, dict[str, float]] = {}
    total_ns = 0
    for tp in fds:
        ns = end[tp][0] - start[tp][0]
        runs = end[tp][1] - start[tp][1]
        fns, fruns = fend[tp][0] - fstart[tp][0], fend[tp][1] - fstart[tp][1]
        total_ns += ns
        per_tp[tp] = {
            "runs": runs,
            "ns_per_run": round(ns / runs, 1) if runs else 0.0,
            "floor_ns_per_run": round(fns / fruns, 1) if fruns else 0.0,
        }
    return {
        "hook": hook.value,
        "watched": watched,
        "connections": made,
        "wall_s": round(wall, 2),
        "tracepoints": per_tp,
        "probe_ns_per_connection": round(total_ns / made, 1),
        "retransmits_counted": sum(r.retransmits for r in rows),
        "resets_counted": sum(r.resets_sent + r.resets_received for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connects", type=int, default=300)
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    floor = build_floor(out=Path(tempfile.mkdtemp(prefix="orb8-tcp-bench-")))
    for rnd in range(args.rounds):
        # alternate the order each round, so drift in the machine's load is shared
        order = [(h, w) for h in TcpHook for w in (True, False)]
        for hook, watched in order if rnd % 2 == 0 else order[::-1]:
            r = measure(hook=hook, watched=watched, connects=args.connects, floor=floor)
            r["round"] = rnd
            results.append(r)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": os.uname().release, "runs": results}, indent=2))
    print("| hook | watched | tracepoint | runs/round | ns per run | empty program | ratio |")
    print("|---|---|---|---|---|---|---|")

    def med(values: list[float]) -> str:
        v = sorted(values)
        return f"{v[len(v) // 2]:.0f} ({v[0]:.0f} to {v[-1]:.0f})"

    def ratio_med(values: list[float]) -> str:
        v = sorted(values)
        return f"{v[len(v) // 2]:.2f} ({v[0]:.2f} to {v[-1]:.2f})"

    for hook in TcpHook:
        for watched in (True, False):
            sel = [r for r in results if r["hook"] == hook.value and r["watched"] == watched]
            for tp in TRACEPOINTS:
                per = [r["tracepoints"][tp] for r in sel]
                if not any(p["runs"] for p in per):
                    continue
                ratios = [p["ns_per_run"] / p["floor_ns_per_run"] for p in per
                          if p["floor_ns_per_run"]]  # fmt: skip
                runs = sorted(p["runs"] for p in per)[len(per) // 2]
                cells = [
                    hook.value, "yes" if watched else "no", tp, str(runs),
                    med([p["ns_per_run"] for p in per]),
                    med([p["floor_ns_per_run"] for p in per]), ratio_med(ratios),
                ]  # fmt: skip
                print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
