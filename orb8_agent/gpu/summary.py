"""Totals over a node's GPU rows, counting each physical GPU or MIG instance once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
    memory: list[int] = []
    for uses in per_device.values():
        process = [u for u in uses if u.scope == "process"]
        if process:
            vals = [u.utilization_percent for u in process if u.utilization_percent is not None]
            if vals:
                utils.append(min(100.0, sum(vals)))
            memory.extend(u.memory_used_bytes for u in process if u.memory_used_bytes is not None)
            continue
        first = uses[0]
        if first.utilization_percent is not None:
            utils.append(first.utilization_percent)
        if first.memory_used_bytes is not None:
            memory.append(first.memory_used_bytes)
    return GpuSummary(
        gpus=len(per_device),
        pods=len(pods),
        avg_utilization=sum(utils) / len(utils) if utils else None,
        # No reading is not zero bytes: left out when no device reported memory.
        memory_used_bytes=sum(memory) if memory else None,
    )


def summarize_nodes(*, nodes: Iterable[Mapping[str, Any]]) -> GpuSummary:
    """The same totals over status.nodes[] entries, for the operator's merge.

    Status rows do not carry the scope of their readings; the node's
    ``source`` does: time-sliced rows from NVML are per-process shares and
    are summed, everything else is device-wide and counted once per GPU.
    """
    pods: set[tuple[str, str]] = set()
    devices: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    split: set[tuple[str, str]] = set()
    for entry in nodes:
        node = str(entry.get("node", ""))
        per_process = entry.get("source") == "nvml"
        for row in entry.get("pods") or []:
            pods.add((str(row.get("namespace", "")), str(row.get("pod", ""))))
            for g in row.get("gpus") or []:
                key = (node, str(g.get("uuid", "")))
                devices.setdefault(key, []).append(g)
                if per_process and g.get("sharing") == "time-sliced":
                    split.add(key)
    utils: list[float] = []
    memory: list[int] = []
    for key, gs in devices.items():
        chosen = gs if key in split else gs[:1]
        vals = [float(g["utilizationPercent"]) for g in chosen if "utilizationPercent" in g]
        if vals:
            utils.append(min(100.0, sum(vals)))
        memory.extend(int(g["memoryUsedBytes"]) for g in chosen if "memoryUsedBytes" in g)
    return GpuSummary(
        gpus=len(devices),
        pods=len(pods),
        avg_utilization=sum(utils) / len(utils) if utils else None,
        memory_used_bytes=sum(memory) if memory else None,
    )
