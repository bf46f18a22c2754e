"""Print what orb8's GPU sources see on this machine.

``python -m orb8_agent.gpu.check [--exporter http://127.0.0.1:9400/metrics]``

Reads NVML (devices, MIG instances, processes with the pod each belongs to)
and, when asked, one dcgm-exporter scrape. Exits 0 when NVML answered,
2 when it did not, 3 when the exporter was asked for and failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from orb8_agent.gpu.exporter import ExporterEndpoint, scrape_exporter
from orb8_agent.gpu.nvml import NvmlSource
from orb8_common.errors import SourceUnavailableError

GIB = 2**30


def _fmt(value: float | None, unit: str = "", scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:.1f}{unit}"


def check_nvml(*, samples: int) -> int:
    src = NvmlSource()
    try:
        now = datetime.now(UTC)
        reading = src.read(now=now)
        # Per-process utilization needs two reads: the first sets the sample window.
        for _ in range(max(samples - 1, 0)):
            time.sleep(1.0)
            reading = src.read(now=datetime.now(UTC))
    except SourceUnavailableError as exc:
        print(f"nvml: unavailable: {exc}")
        return 2
    finally:
        src.close()
    print(f"nvml: {len(reading.devices)} GPU(s)")
    for d in reading.devices:
        print(
            f"  [{d.index}] {d.uuid} {d.model}: util {_fmt(d.utilization_percent, '%')}, "
            f"mem {_fmt(d.memory_used_bytes, ' GiB', GIB)}/"
            f"{_fmt(d.memory_total_bytes, ' GiB', GIB)}, "
            f"{_fmt(d.temperature_celsius, ' C')}, {_fmt(d.power_watts, ' W')}"
        )
        for m in d.mig_instances:
            print(
                f"      MIG {m.uuid} gi={m.gpu_instance_id} {m.profile}: "
                f"mem {_fmt(m.memory_used_bytes, ' GiB', GIB)}/"
                f"{_fmt(m.memory_total_bytes, ' GiB', GIB)}"
            )
    print(f"nvml: {len(reading.processes)} GPU process(es)")
    for p in reading.processes:
        owner = f"pod {p.pod_uid} container {p.container_id}" if p.pod_uid else "not in a pod"
        print(
            f"  pid {p.pid} on {p.gpu_uuid}: mem {_fmt(p.used_memory_bytes, ' MiB', 2**20)}, "
            f"sm {_fmt(p.sm_util_percent, '%')}, {owner}"
        )
    return 0


def check_exporter(*, url: str, timeout_s: float) -> int:
    parts = urlsplit(url)
    endpoint = ExporterEndpoint(
        host=parts.hostname or "127.0.0.1", port=parts.port or 9400, path=parts.path or "/metrics"
    )
    try:
        scrape = scrape_exporter(endpoint=endpoint, timeout_s=timeout_s, now=datetime.now(UTC))
    except SourceUnavailableError as exc:
        print(f"dcgm-exporter: {exc}")
        return 3
    print(f"dcgm-exporter: {len(scrape.entities)} GPU(s)/MIG instance(s) at {endpoint.url}")
    for e in sorted(scrape.entities, key=lambda e: (e.index or 0, e.gpu_instance_id or -1)):
        mig = f" MIG {e.mig_profile} gi={e.gpu_instance_id}" if e.is_mig_instance else ""
        pods = ", ".join(f"{p.namespace}/{p.pod}/{p.container}" for p in e.pods) or "no pod labels"
        print(
            f"  [{e.index}] {e.uuid}{mig} {e.model}: util {_fmt(e.gpu_util_percent, '%')}, "
            f"gr {_fmt(e.gr_engine_active)}, fb used {_fmt(e.fb_used_bytes, ' GiB', GIB)}, "
            f"{_fmt(e.temperature_celsius, ' C')}, {_fmt(e.power_watts, ' W')}; {pods}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orb8_agent.gpu.check", description=__doc__)
    ap.add_argument("--exporter", help="dcgm-exporter metrics URL to scrape too")
    ap.add_argument("--samples", type=int, default=2, help="NVML reads, 1 s apart")
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    rc = check_nvml(samples=args.samples)
    if args.exporter:
        rc = rc or check_exporter(url=args.exporter, timeout_s=args.timeout)
    return rc


if __name__ == "__main__":
    sys.exit(main())
