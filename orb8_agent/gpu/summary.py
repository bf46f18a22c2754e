"""Totals over a node's GPU rows, counting each physical GPU or MIG instance once."""

from __future__ import annotations

from collections.abc import Sequence

from orb8_agent.gpu.model import GpuPodRow, GpuSummary, GpuUse


def summarize(*, rows: Sequence[GpuPodRow]) -> GpuSummary:
    """gpus: distinct devices; pods: distinct pods; avgUtilization: mean over devices.

    Device-scope readings appear once per device however many sharers show
    them; process-scope readings (NVML split of a time-sliced GPU) are summed
    over the sharers first.
    """
    pods: set[tuple[str, str]] = set()
    per_device: dict[str, list[GpuUse]] = {}
    for row in rows:
        pods.add((row.namespace, row.pod))
        for g in row.gpus:
            per_device.setdefault(g.device_key or g.uuid, []).append(g)
    utils: list[float] = []
    memory = 0
    for uses in per_device.values():
        process = [u for u in uses if u.scope == "process"]
        if process:
            vals = [u.utilization_percent for u in process if u.utilization_percent is not None]
            if vals:
                utils.append(min(100.0, sum(vals)))
            memory += sum(u.memory_used_bytes or 0 for u in process)
            continue
        first = uses[0]
        if first.utilization_percent is not None:
            utils.append(first.utilization_percent)
        memory += first.memory_used_bytes or 0
    return GpuSummary(
        gpus=len(per_device),
        pods=len(pods),
        avg_utilization=sum(utils) / len(utils) if utils else None,
        memory_used_bytes=memory,
    )
