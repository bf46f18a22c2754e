"""In-kernel ns per packet of the DNS probe (BPF_PROG_TEST_RUN), side by side.

Programs, all loaded and never attached: the empty tc program (the floor),
the flow probe (orb8_flows_egress) and the DNS probe (orb8_dns). Frames: a
1,454-byte IPv4/TCP frame (what most packets are: the DNS probe's cost on
them is the header walk and one port compare), a DNS query over UDP, and
its answer (the in-flight entry is consumed by the first run, so repeats
measure the unmatched-answer path, one lookup short of a matched one).
Rounds alternate the order; the report is per-round differences and ratios.

    python -m bench.dnscost [--rounds 20] [--repeat 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.dns import DnsCollector
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.objects import object_path
from orb8_dev import dnswire

from .kernelcost import tcp_frame
from .stats import ratios, summary

CLIENT, SERVER = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def udp_frame(*, payload: bytes, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0x4000, 64, 17, 0, src, dst)
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + payload


def frames() -> dict[str, bytes]:
    query = dnswire.query(ident=0x4242, name="cart.shop.svc.cluster.local", qtype=1)
    answer = dnswire.answer(request=query, rcode=0)
    return {
        "tcp_1454": tcp_frame(),
        "dns_query": udp_frame(payload=query, src=CLIENT, dst=SERVER, sport=40000, dport=53),
        "dns_answer": udp_frame(payload=answer, src=SERVER, dst=CLIENT, sport=53, dport=40000),
    }


@contextlib.contextmanager
def loaded() -> Iterator[dict[str, int]]:
    empty = libbpf.BpfObject(path=object_path(name="noop"))
    with contextlib.ExitStack() as stack:
        for prog in ("orb8_noop_raw", "orb8_noop_tp"):
            empty.set_autoload(prog=prog, enabled=False)
        empty.load()
        stack.callback(empty.close)
        run_dir = Path(tempfile.mkdtemp())
        flows = stack.enter_context(FlowCollector(agent_id="bench-dns", run_dir=run_dir))
        dns = stack.enter_context(DnsCollector(agent_id="bench-dns", run_dir=run_dir))
        yield {
            "empty": empty.prog_fd(name="orb8_noop_tc"),
            "flows": flows.prog_fd(direction="egress"),
            "dns": dns.prog_fd,
        }


def measure(*, rounds: int, repeat: int) -> dict[str, dict[str, list[float]]]:
    """frame -> program -> ns per run, one sample per round."""
    out: dict[str, dict[str, list[float]]] = {}
    with loaded() as fds:
        for name, pkt in frames().items():
            for fd in fds.values():  # first runs insert rows/flows: measure the steady state
                libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
            progs = list(fds)
            samples = out.setdefault(name, {})
            for r in range(rounds):
                for prog in progs if r % 2 == 0 else reversed(progs):
                    ns = libbpf.test_run(prog_fd=fds[prog], packet=pkt, repeat=repeat)[1]
                    samples.setdefault(prog, []).append(float(ns))
    return out


def report(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for frame, s in samples.items():
        added_dns = [d - e for d, e in zip(s["dns"], s["empty"], strict=True)]
        added_flows = [f - e for f, e in zip(s["flows"], s["empty"], strict=True)]
        out[frame] = {
            "ns": {prog: summary(values=v) for prog, v in s.items()},
            "dns_added_ns": summary(values=added_dns),
            "flows_added_ns": summary(values=added_flows),
            "dns_added_over_flows_added": summary(values=ratios(num=added_dns, den=added_flows)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dnscost")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=200_000)
    args = parser.parse_args()
    samples = measure(rounds=args.rounds, repeat=args.repeat)
    print(json.dumps({"rounds": args.rounds, "repeat": args.repeat, **report(samples)}, indent=2))


if __name__ == "__main__":
    main()
