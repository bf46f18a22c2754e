"""In-kernel ns per packet of each tc program: BPF_PROG_TEST_RUN on one
1,454-byte IPv4/TCP frame, and kernel.bpf_stats_enabled run time over live
64-byte UDP traffic on the bench's veth pair.

Programs: the empty tc program (the floor), bench/reference.bpf.c's
ref_count (the simplest counter), and the flow probe (orb8_flows_egress /
orb8_flows_ingress). Rounds alternate the order.
"""

from __future__ import annotations

import contextlib
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orb8_agent.dataplane import libbpf
from orb8_agent.dataplane.flows import FlowCollector
from orb8_agent.dataplane.objects import object_path
from orb8_dev import netns
from orb8_dev.traffic_ctl import warm_neighbours

from . import netload, netpeers
from .stats import ratios, summary


def tcp_frame(*, size: int = 1454) -> bytes:
    payload = size - 14 - 20 - 20
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + 20 + payload,
        1,
        0x4000,
        64,
        6,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, 1, 0, 5 << 4, 0x10, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + b"x" * payload


@contextlib.contextmanager
def loaded(*, reference: Path) -> Iterator[dict[str, int]]:
    """All three programs loaded, not attached; yields name -> prog fd."""
    empty = libbpf.BpfObject(path=object_path(name="noop"))
    ref = libbpf.BpfObject(path=reference)
    with contextlib.ExitStack() as stack:
        for prog in ("orb8_noop_raw", "orb8_noop_tp"):
            empty.set_autoload(prog=prog, enabled=False)
        empty.load()
        stack.callback(empty.close)
        for prog in ("empty_raw_tp", "empty_btf"):
            ref.set_autoload(prog=prog, enabled=False)
        ref.load()
        stack.callback(ref.close)
        flows = stack.enter_context(
            FlowCollector(agent_id="bench-kernel", run_dir=Path(tempfile.mkdtemp()))
        )
        yield {
            "empty": empty.prog_fd(name="orb8_noop_tc"),
            "reference": ref.prog_fd(name="ref_count"),
            "orb8_egress": flows.prog_fd(direction="egress"),
            "orb8_ingress": flows.prog_fd(direction="ingress"),
        }


def test_run(*, reference: Path, rounds: int, repeat: int) -> dict[str, list[float]]:
    pkt = tcp_frame()
    samples: dict[str, list[float]] = {}
    with loaded(reference=reference) as fds:
        for fd in fds.values():  # first run inserts the flow; measure the steady state
            libbpf.test_run(prog_fd=fd, packet=pkt, repeat=1)
        names = list(fds)
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                ns = libbpf.test_run(prog_fd=fds[name], packet=pkt, repeat=repeat)[1]
                samples.setdefault(name, []).append(float(ns))
    return samples


def run_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program from its fdinfo (bpf_stats_enabled)."""
    info = dict(
        line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    )
    return int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0"))


@contextlib.contextmanager
def stats_enabled() -> Iterator[None]:
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


def live(*, reference: Path, gen: Path, rounds: int, seconds: float) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    with netns.veth_pair() as pair, netload.Load(pair=pair, gen=gen, cpu=0, seconds=seconds) as ld:
        warm_neighbours(pair)
        with netns.enter(pair.ns_a):

            @contextlib.contextmanager
            def flows() -> Iterator[list[int]]:
                with FlowCollector(agent_id="bench-live", run_dir=Path(tempfile.mkdtemp())) as c:
                    c.attach(interface=pair.if_a)
                    yield [c.prog_fd(direction=d) for d in ("egress", "ingress")]

            @contextlib.contextmanager
            def tc_only(path: Path, prog: str, disable: tuple[str, ...]) -> Iterator[list[int]]:
                with netpeers.tc_program(
                    interface=pair.if_a, path=path, prog=prog, disable=disable
                ) as fd:
                    yield [fd]

            progs: dict[str, Callable[[], contextlib.AbstractContextManager[list[int]]]] = {
                "empty": lambda: tc_only(
                    object_path(name="noop"), "orb8_noop_tc", ("orb8_noop_raw", "orb8_noop_tp")
                ),
                "reference": lambda: tc_only(reference, "ref_count", ("empty_raw_tp", "empty_btf")),
                "orb8": flows,
            }
            with stats_enabled():
                for r in range(rounds):
                    for name in list(progs) if r % 2 == 0 else reversed(list(progs)):
                        with progs[name]() as fds:
                            before = [run_stats(fd) for fd in fds]
                            ld.udp()
                            ld.flows(10_000)
                            after = [run_stats(fd) for fd in fds]
                        t = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
                        n = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
                        samples.setdefault(name, []).append(t / n if n else float("nan"))
    return samples


def summarise(samples: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"ns": {k: summary(values=v) for k, v in samples.items()}}
    orb8 = samples.get("orb8") or samples.get("orb8_egress") or []
    out["orb8_over_reference"] = summary(values=ratios(num=orb8, den=samples["reference"]))
    added_orb8 = [a - b for a, b in zip(orb8, samples["empty"], strict=True)]
    added_ref = [a - b for a, b in zip(samples["reference"], samples["empty"], strict=True)]
    out["orb8_added_over_reference_added"] = summary(values=ratios(num=added_orb8, den=added_ref))
    return out


def bench(
    *, reference: Path, gen: Path, rounds: int, repeat: int, seconds: float
) -> dict[str, Any]:
    tr = test_run(reference=reference, rounds=rounds, repeat=repeat)
    lv = live(reference=reference, gen=gen, rounds=max(2, rounds // 2), seconds=seconds)
    return {
        "test_run": {"repeat": repeat, "samples": tr, **summarise(tr)},
        "bpf_stats": {"samples": lv, **summarise(lv)},
    }
