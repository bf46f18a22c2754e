"""Collector cost at N active flows: CPU and wall time of one read (drain and
column decode), the same with one Flow object per flow, and RSS.

Run as its own process (``python -m bench.dataplane_collector --flows N``) so
its RSS is what an agent holding the flow probe would use. The flows map is
filled from user space with N distinct flows before every read, because each
read drains the map.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import struct
import sys
import time
from pathlib import Path

from orb8_agent.dataplane import maps
from orb8_agent.dataplane.abi import FLOW4_KEY, FLOW_VALUE
from orb8_agent.dataplane.flowcodec import AddressNames, decode4, decode_rows
from orb8_agent.dataplane.flows import FlowCollector


def _entries(count: int) -> tuple[bytes, bytes]:
    keys = bytearray()
    values = bytearray()
    for i in range(count):
        src = struct.pack("!I", 0x0A000000 | (i >> 8))
        dst = struct.pack("!I", 0x0A800000 | (i & 0xFF))
        keys += FLOW4_KEY.pack(src, dst, 1024 + i % 50000, 443, 7, 6, i & 1)
        values += FLOW_VALUE.pack(1500 * (i % 97 + 1), i % 97 + 1, 1, 2, 0x12, 0)
    return bytes(keys), bytes(values)


def _rss_kib() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--flows", type=int, required=True)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    keys, values = _entries(args.flows)
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    rows_ms: list[float] = []
    seen: list[int] = []
    with FlowCollector(agent_id="bench-collector", max_flows=max(131072, args.flows * 2)) as c:
        fd = c.flow_map_fd(family=4)
        for _ in range(args.rounds):
            # the read the agent does: drain and decode into columns
            maps.update_batch(fd=fd, keys=keys, values=values, count=args.flows)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            cols = c.read_columns()
            cpu_ms.append((time.process_time() - cpu0) * 1e3)
            wall_ms.append((time.perf_counter() - wall0) * 1e3)
            seen.append(len(cols))
            del cols
            # the same, then one Flow object per flow (read_flows)
            maps.update_batch(fd=fd, keys=keys, values=values, count=args.flows)
            cpu0 = time.process_time()
            flows = c.read_flows()
            rows_ms.append((time.process_time() - cpu0) * 1e3)
            del flows
        # the read in its halves: the kernel batch drain, then each decoder
        kernel_ms: list[float] = []
        decode_ms: list[float] = []
        per_flow_ms: list[float] = []
        for _ in range(args.rounds):
            maps.update_batch(fd=fd, keys=keys, values=values, count=args.flows)
            cpu0 = time.process_time()
            k, v, _n = maps.read_batch(
                fd=fd, key_size=FLOW4_KEY.size, value_size=FLOW_VALUE.size, delete=True
            )
            cpu1 = time.process_time()
            gc.disable()
            decode4(keys=k, values=v, names=AddressNames())
            cpu2 = time.process_time()
            decode_rows(family=4, keys=k, values=v)
            gc.enable()
            kernel_ms.append((cpu1 - cpu0) * 1e3)
            decode_ms.append((cpu2 - cpu1) * 1e3)
            per_flow_ms.append((time.process_time() - cpu2) * 1e3)
        rss, hwm = _rss_kib()
    print(
        json.dumps(
            {
                "flows": args.flows,
                "read": min(seen),
                "read_wall_ms": statistics.median(wall_ms),
                "read_cpu_ms": statistics.median(cpu_ms),
                "core_percent_at_1s": statistics.median(cpu_ms) / 10.0,
                "batch_read_cpu_ms": statistics.median(kernel_ms),
                "decode_cpu_ms": statistics.median(decode_ms),
                "read_flow_objects_cpu_ms": statistics.median(rows_ms),
                "per_flow_decode_cpu_ms": statistics.median(per_flow_ms),
                "rss_mib": rss / 1024,
                "peak_rss_mib": hwm / 1024,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
