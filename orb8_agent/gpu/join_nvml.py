"""The join with NVML readings: per-process shares of time-sliced GPUs."""

from __future__ import annotations

from collections import defaultdict

from orb8_agent.gpu.claims import CKey, Claim, ClaimKey, ClaimSet, Notes, bare_use, build_rows
from orb8_agent.gpu.model import (
    GpuPodRow,
    GpuUse,
    NvmlDevice,
    NvmlMigInstance,
    NvmlProcess,
    NvmlReading,
    Sharing,
)


def join_nvml(*, reading: NvmlReading, state: ClaimSet, node: str) -> tuple[GpuPodRow, ...]:
    """Rows with NVML readings; time-sliced GPUs are split by process."""
    tg, claims, sharers, notes = state.targets, state.claims, state.sharers, state.notes
    devices = {d.uuid: d for d in reading.devices}
    migs: dict[str, tuple[NvmlMigInstance, NvmlDevice]] = {}
    for d in reading.devices:
        for mi in d.mig_instances:
            migs[mi.uuid] = (mi, d)

    procs_by_gpu: dict[str, list[tuple[NvmlProcess, CKey | None]]] = defaultdict(list)
    for p in reading.processes:
        ckey = tg.process_ckey(p)
        procs_by_gpu[p.gpu_uuid].append((p, ckey))
        if p.pod_uid is not None and p.gpu_uuid in devices:
            # Pods by uid stand in for (namespace, name) when they are not targets.
            t = tg.by_uid.get(p.pod_uid)
            sharers[p.gpu_uuid].add((t.namespace, t.name) if t else ("", p.pod_uid))
        if ckey is not None:
            kind = "mig" if p.gpu_uuid in migs else "gpu"
            profile = migs[p.gpu_uuid][0].profile if kind == "mig" else ""
            covered = (ckey, kind, p.gpu_uuid) in claims or any(
                k[1] == kind and k[2] == p.gpu_uuid and k[0][:2] == ckey[:2] for k in claims
            )
            if not covered:
                claims[(ckey, kind, p.gpu_uuid)] = Claim(
                    ckey=ckey, kind=kind, uuid=p.gpu_uuid, mig_profile=profile
                )

    uses: dict[ClaimKey, GpuUse] = {}
    for k, c in claims.items():
        if not tg.wants(c.ckey):
            continue
        sharing = state.sharing(c)
        if c.kind == "mig":
            found = migs.get(c.uuid)
            if found is None:
                notes.add(f"NVML does not list MIG device {c.uuid}")
                uses[k] = bare_use(c, sharing=Sharing.MIG)
                continue
            mi, parent = found
            uses[k] = GpuUse(
                uuid=c.uuid,
                index=parent.index,
                model=parent.model,
                sharing=Sharing.MIG,
                mig_profile=c.mig_profile or mi.profile,
                utilization_percent=None,  # NVML has no per-instance utilization
                memory_used_bytes=mi.memory_used_bytes,
                memory_total_bytes=mi.memory_total_bytes,
                temperature_celsius=parent.temperature_celsius,
                power_watts=parent.power_watts,
                last_updated=reading.read_at,
                device_key=c.uuid,
            )
            continue
        dev = devices.get(c.uuid)
        if dev is None:
            notes.add(f"NVML does not list {c.uuid} (used by {c.ckey[0]}/{c.ckey[1]})")
            uses[k] = bare_use(c, sharing=sharing)
            continue
        if sharing is Sharing.TIME_SLICED:
            uses[k] = _split_use(dev, c, procs_by_gpu.get(c.uuid, []), reading, notes)
        else:
            uses[k] = GpuUse(
                uuid=c.uuid,
                index=dev.index,
                model=dev.model,
                sharing=sharing,
                utilization_percent=dev.utilization_percent,
                memory_used_bytes=dev.memory_used_bytes,
                memory_total_bytes=dev.memory_total_bytes,
                temperature_celsius=dev.temperature_celsius,
                power_watts=dev.power_watts,
                last_updated=reading.read_at,
                device_key=c.uuid,
            )
    return build_rows(node, tg, uses)


def _split_use(
    dev: NvmlDevice,
    c: Claim,
    procs: list[tuple[NvmlProcess, CKey | None]],
    reading: NvmlReading,
    notes: Notes,
) -> GpuUse:
    """A sharer's own use of a time-sliced GPU: the sum over its processes."""
    mine = [
        p for p, ck in procs if ck is not None and ck[:2] == c.ckey[:2] and ck[2] in ("", c.ckey[2])
    ]
    # Processes the agent could not look up (it lacks hostPID, or they exited)
    # might be anyone's; host processes are known to be no pod's.
    unknown = sum(1 for p, _ in procs if not p.cgroup_read)
    if unknown:
        notes.add(
            f"{unknown} process(es) on {dev.uuid} could not be tied to a pod "
            "(the agent needs hostPID to read their cgroups)"
        )
    util: float | None
    memory: int | None
    if not mine and unknown:
        util = memory = None  # a zero here could be one of those processes
    else:
        if procs and all(p.sm_util_percent is None for p, _ in procs):
            util = None  # per-process utilization not supported here
        else:
            util = min(100.0, sum(p.sm_util_percent or 0.0 for p in mine))
        mem_values = [p.used_memory_bytes for p in mine if p.used_memory_bytes is not None]
        memory = sum(mem_values) if mem_values or not mine else None
    return GpuUse(
        uuid=c.uuid,
        index=dev.index,
        model=dev.model,
        sharing=Sharing.TIME_SLICED,
        utilization_percent=util,
        memory_used_bytes=memory,
        memory_total_bytes=dev.memory_total_bytes,
        temperature_celsius=dev.temperature_celsius,
        power_watts=dev.power_watts,
        last_updated=reading.read_at,
        scope="process",
        device_key=c.uuid,
    )
