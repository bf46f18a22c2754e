"""Join GPU readings to pods: the pure core of GPU attribution.

Inputs are plain values (an exporter scrape and/or an NVML reading, the
kubelet's pod-resources view, the session's target pods); the output is one
row per target container with the GPUs it uses. The rules, also in
docs/gpu.md:

* Who uses a GPU is the union of the kubelet's allocations (pod-resources)
  and dcgm-exporter's pod labels. Pod-resources fills in what the labels miss:
  in Kubernetes mode the exporter labels only one of the pods sharing a
  time-sliced GPU.
* A GPU is ``time-sliced`` when the kubelet hands out replica ids for it
  (``GPU-<uuid>::<n>``) or when more than one pod uses it; ``mig`` when the
  device is a MIG instance (``MIG-<uuid>``); ``exclusive`` otherwise.
* A MIG id is tied to an exporter instance line (GPU_I_ID) by NVML when it is
  available, else by the exporter's pod labels, else by profile when exactly
  one unmatched id and one unmatched instance of that profile exist on the
  node. Otherwise the row carries the id and profile but no readings, and a
  note says why.
* With dcgm-exporter alone a time-sliced GPU cannot be split between its
  sharers: every sharer's row shows the device-wide readings (scope
  "device") and a note says so. With NVML the split is real: each sharer
  gets the sum over its own processes (scope "process").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from orb8_agent.gpu.model import (
    DcgmEntity,
    ExporterScrape,
    GpuPodRow,
    GpuUse,
    NvmlDevice,
    NvmlMigInstance,
    NvmlProcess,
    NvmlReading,
    PodResourcesView,
    Sharing,
    TargetPod,
)

MAX_GPUS_PER_ROW = 16
MAX_NOTES = 20

CKey = tuple[str, str, str]  # namespace, pod, container
EntityKey = tuple[str, int | None]  # physical uuid, GPU instance id


@dataclass(frozen=True, slots=True)
class DeviceRef:
    kind: str  # "gpu", "replica", "mig" or "other"
    uuid: str  # the physical GPU for gpu/replica, the MIG-... id for mig
    replica: int | None = None


def parse_device_id(device_id: str) -> DeviceRef:
    """Classify a device plugin id: GPU-<uuid>, GPU-<uuid>::<n>, MIG-<uuid>."""
    if device_id.startswith("MIG-"):
        return DeviceRef(kind="mig", uuid=device_id)
    if device_id.startswith("GPU-"):
        base, sep, n = device_id.partition("::")
        if sep:
            return DeviceRef(kind="replica", uuid=base, replica=int(n) if n.isdigit() else None)
        return DeviceRef(kind="gpu", uuid=device_id)
    return DeviceRef(kind="other", uuid=device_id)


def mig_profile_of(resource_name: str) -> str:
    """nvidia.com/mig-1g.10gb -> 1g.10gb; '' for the single MIG strategy (nvidia.com/gpu)."""
    prefix = "nvidia.com/mig-"
    return resource_name[len(prefix) :] if resource_name.startswith(prefix) else ""


@dataclass(frozen=True, slots=True)
class JoinResult:
    rows: tuple[GpuPodRow, ...]
    notes: tuple[str, ...]


@dataclass
class _Claim:
    ckey: CKey
    kind: str  # "gpu" (whole or replica) or "mig"
    uuid: str  # physical uuid for gpu; MIG-... for mig ("" when only the instance is known)
    mig_profile: str = ""
    instance: EntityKey | None = None  # exporter instance for mig claims


@dataclass
class _Notes:
    items: dict[str, None] = field(default_factory=dict)

    def add(self, text: str) -> None:
        if len(self.items) < MAX_NOTES:
            self.items[text] = None


class _Targets:
    def __init__(self, targets: Iterable[TargetPod]) -> None:
        self.by_name: dict[tuple[str, str], TargetPod] = {}
        self.by_uid: dict[str, TargetPod] = {}
        for t in targets:
            self.by_name[(t.namespace, t.name)] = t
            if t.uid:
                self.by_uid[t.uid] = t

    def wants(self, ckey: CKey) -> bool:
        return (ckey[0], ckey[1]) in self.by_name

    def process_ckey(self, proc: NvmlProcess) -> CKey | None:
        if proc.pod_uid is None:
            return None
        t = self.by_uid.get(proc.pod_uid)
        if t is None:
            return None
        name = ""
        for c in t.containers:
            if proc.container_id and c.bare_id == proc.container_id:
                name = c.name
                break
        else:
            if len(t.containers) == 1:
                name = t.containers[0].name
        return (t.namespace, t.name, name)


def join(
    *,
    node: str,
    targets: Sequence[TargetPod],
    exporter: ExporterScrape | None = None,
    nvml: NvmlReading | None = None,
    resources: PodResourcesView | None = None,
) -> JoinResult:
    """Rows for the target pods only. Readings come from the exporter when given, else NVML."""
    tg = _Targets(targets)
    notes = _Notes()
    claims: dict[tuple[CKey, str, str], _Claim] = {}
    # Pods on each physical GPU (all pods, not only targets) and GPUs with replica ids.
    sharers: dict[str, set[tuple[str, str]]] = defaultdict(set)
    replicated: set[str] = set()
    mig_ids_by_profile: dict[str, set[str]] = defaultdict(set)

    def claim(c: _Claim) -> None:
        claims.setdefault((c.ckey, c.kind, c.uuid or repr(c.instance)), c)

    if resources is not None:
        for dev in resources.allocatable:
            ref = parse_device_id(dev.device_id)
            if ref.kind == "replica":
                replicated.add(ref.uuid)
            elif ref.kind == "mig":
                mig_ids_by_profile[mig_profile_of(dev.resource_name)].add(ref.uuid)
        for a in resources.allocations:
            ref = parse_device_id(a.device_id)
            ckey = (a.namespace, a.pod, a.container)
            if ref.kind in ("gpu", "replica"):
                if ref.kind == "replica":
                    replicated.add(ref.uuid)
                sharers[ref.uuid].add((a.namespace, a.pod))
                claim(_Claim(ckey=ckey, kind="gpu", uuid=ref.uuid))
            elif ref.kind == "mig":
                profile = mig_profile_of(a.resource_name)
                mig_ids_by_profile[profile].add(ref.uuid)
                claim(_Claim(ckey=ckey, kind="mig", uuid=ref.uuid, mig_profile=profile))
            elif tg.wants(ckey):
                notes.add(f"{a.resource_name} id {a.device_id!r} is not a GPU or MIG UUID; skipped")

    if exporter is not None:
        rows = _join_exporter(
            exporter, nvml, tg, claims, sharers, replicated, mig_ids_by_profile, notes, node
        )
    elif nvml is not None:
        rows = _join_nvml(nvml, tg, claims, sharers, replicated, notes, node)
    else:
        rows = _rows(
            node,
            tg,
            {k: _bare_use(c, sharing=_sharing(c, sharers, replicated)) for k, c in claims.items()},
        )
    return JoinResult(rows=rows, notes=tuple(notes.items))


def _sharing(c: _Claim, sharers: dict[str, set[tuple[str, str]]], replicated: set[str]) -> Sharing:
    if c.kind == "mig":
        return Sharing.MIG
    if c.uuid in replicated or len(sharers.get(c.uuid, ())) > 1:
        return Sharing.TIME_SLICED
    return Sharing.EXCLUSIVE


def _bare_use(c: _Claim, *, sharing: Sharing, note: str = "") -> GpuUse:
    return GpuUse(
        uuid=c.uuid,
        index=None,
        model="",
        sharing=sharing,
        mig_profile=c.mig_profile,
        device_key=c.uuid,
        note=note,
    )


def _rows(
    node: str, tg: _Targets, uses: dict[tuple[CKey, str, str], GpuUse]
) -> tuple[GpuPodRow, ...]:
    grouped: dict[CKey, list[GpuUse]] = defaultdict(list)
    for (ckey, _, _), use in uses.items():
        if tg.wants(ckey):
            grouped[ckey].append(use)
    rows = []
    for ckey in sorted(grouped):
        gpus = sorted(
            grouped[ckey], key=lambda u: (u.index if u.index is not None else 1 << 30, u.uuid)
        )
        rows.append(
            GpuPodRow(
                namespace=ckey[0],
                pod=ckey[1],
                container=ckey[2],
                node=node,
                gpus=tuple(gpus[:MAX_GPUS_PER_ROW]),
            )
        )
    return tuple(rows)


# ---------------------------------------------------------------- exporter


def _join_exporter(
    scrape: ExporterScrape,
    nvml: NvmlReading | None,
    tg: _Targets,
    claims: dict[tuple[CKey, str, str], _Claim],
    sharers: dict[str, set[tuple[str, str]]],
    replicated: set[str],
    mig_ids_by_profile: dict[str, set[str]],
    notes: _Notes,
    node: str,
) -> tuple[GpuPodRow, ...]:
    parents: dict[str, DcgmEntity] = {}
    instances: dict[EntityKey, DcgmEntity] = {}
    for e in scrape.entities:
        if e.is_mig_instance:
            instances[e.key] = e
        else:
            parents[e.uuid] = e
    # Parent metadata (index, model) also comes from instance lines.
    meta: dict[str, DcgmEntity] = {}
    for e in scrape.entities:
        meta.setdefault(e.uuid, e)

    # Exporter pod labels: add what pod-resources did not say. A label naming
    # the pod but not the container defers to pod-resources' container.
    known = {(c.ckey[0], c.ckey[1], c.uuid) for c in claims.values() if c.kind == "gpu"}
    for e in scrape.entities:
        for p in e.pods:
            ckey = (p.namespace, p.pod, p.container)
            if e.is_mig_instance:
                continue  # bound below, once MIG ids are matched
            sharers[e.uuid].add((p.namespace, p.pod))
            if not p.container and (p.namespace, p.pod, e.uuid) in known:
                continue
            claim_key = (ckey, "gpu", e.uuid)
            claims.setdefault(claim_key, _Claim(ckey=ckey, kind="gpu", uuid=e.uuid))

    bound, candidates = _bind_mig(claims, instances, nvml, mig_ids_by_profile)

    uses: dict[tuple[CKey, str, str], GpuUse] = {}
    for k, c in claims.items():
        if not tg.wants(c.ckey):
            continue
        sharing = _sharing(c, sharers, replicated)
        if c.kind == "gpu":
            ent = parents.get(c.uuid)
            if ent is None:
                notes.add(
                    f"no dcgm-exporter readings for {c.uuid} (used by {c.ckey[0]}/{c.ckey[1]})"
                )
                uses[k] = _bare_use(c, sharing=sharing)
                continue
            note = ""
            if sharing is Sharing.TIME_SLICED:
                n = len(sharers.get(c.uuid, ())) or 1
                note = (
                    f"{c.uuid} is time-sliced between {n} pod(s); dcgm-exporter reports "
                    "device-wide readings only, so each sharer's row shows the whole GPU"
                )
                notes.add(note)
            uses[k] = _use_from_entity(ent, ent, uuid=c.uuid, sharing=sharing, at=scrape, note=note)
        else:
            inst_key = c.instance or bound.get(c.uuid)
            inst = instances.get(inst_key) if inst_key is not None else None
            if inst is None:
                uses[k] = _unmatched_mig(c, candidates.get(c.uuid, []), meta, notes)
                continue
            parent = parents.get(inst.uuid) or meta.get(inst.uuid) or inst
            uses[k] = _use_from_entity(
                inst, parent, uuid=c.uuid or inst.uuid, sharing=Sharing.MIG, at=scrape, note=""
            )
    return _rows(node, tg, uses)


def _bind_mig(
    claims: dict[tuple[CKey, str, str], _Claim],
    instances: dict[EntityKey, DcgmEntity],
    nvml: NvmlReading | None,
    mig_ids_by_profile: dict[str, set[str]],
) -> tuple[dict[str, EntityKey], dict[str, list[EntityKey]]]:
    """Match MIG-<uuid> ids to exporter instance lines (parent uuid, GPU_I_ID).

    Returns the matches and, for each id left unmatched, the instances it could be.
    """
    bound: dict[str, EntityKey] = {}
    candidates: dict[str, list[EntityKey]] = {}
    if nvml is not None:
        for dev in nvml.devices:
            for mi in dev.mig_instances:
                if (
                    mi.gpu_instance_id is not None
                    and (mi.parent_uuid, mi.gpu_instance_id) in instances
                ):
                    bound[mi.uuid] = (mi.parent_uuid, mi.gpu_instance_id)
    mig_claims = [c for c in claims.values() if c.kind == "mig"]
    by_ckey: dict[CKey, list[_Claim]] = defaultdict(list)
    for c in mig_claims:
        by_ckey[c.ckey].append(c)

    # Exporter pod labels on instance lines.
    for key, inst in instances.items():
        for p in inst.pods:
            ckey = (p.namespace, p.pod, p.container)
            if key in bound.values():
                break
            options = [
                c
                for c in by_ckey.get(ckey, [])
                if c.uuid not in bound and c.mig_profile in ("", inst.mig_profile)
            ]
            if len(options) == 1:
                bound[options[0].uuid] = key
            elif not options and ckey not in by_ckey:
                # Only the exporter knows this container uses the instance.
                c = _Claim(
                    ckey=ckey, kind="mig", uuid="", mig_profile=inst.mig_profile, instance=key
                )
                claims.setdefault((ckey, "mig", repr(key)), c)

    # By profile, when exactly one unmatched id and one unmatched instance remain.
    taken = set(bound.values())
    for c in mig_claims:
        if c.uuid in bound:
            continue
        ids = {i for i in mig_ids_by_profile.get(c.mig_profile, set()) if i not in bound}
        ids.add(c.uuid)
        free = [
            k
            for k, inst in instances.items()
            if k not in taken and c.mig_profile in ("", inst.mig_profile)
        ]
        if len(ids) == 1 and len(free) == 1:
            bound[c.uuid] = free[0]
            taken.add(free[0])
        else:
            candidates[c.uuid] = free
    return bound, candidates


def _unmatched_mig(
    c: _Claim, candidates: list[EntityKey], meta: dict[str, DcgmEntity], notes: _Notes
) -> GpuUse:
    """A MIG id no exporter instance could be tied to: identity only, no readings."""
    profile = c.mig_profile or "unknown profile"
    if candidates:
        note = (
            f"cannot tell which of {len(candidates)} {profile} MIG instances {c.uuid} is; "
            "install nvidia-ml-py on the agent or run dcgm-exporter in Kubernetes mode"
        )
    else:
        note = f"dcgm-exporter shows no {profile} MIG instance that could be {c.uuid}"
    notes.add(note)
    parents = {uuid for uuid, _ in candidates}
    # All candidates on one GPU: its index and model are known even if the instance is not.
    parent = meta.get(next(iter(parents))) if len(parents) == 1 else None
    return GpuUse(
        uuid=c.uuid,
        index=None if parent is None else parent.index,
        model="" if parent is None else parent.model,
        sharing=Sharing.MIG,
        mig_profile=c.mig_profile,
        device_key=c.uuid,
        note=note,
    )


def _use_from_entity(
    ent: DcgmEntity,
    parent: DcgmEntity,
    *,
    uuid: str,
    sharing: Sharing,
    at: ExporterScrape,
    note: str,
) -> GpuUse:
    if ent.is_mig_instance:
        # GPU_UTIL is not supported on MIG; GR_ENGINE_ACTIVE is the instance's own.
        util = None if ent.gr_engine_active is None else ent.gr_engine_active * 100.0
    else:
        util = ent.gpu_util_percent
        if util is None and ent.gr_engine_active is not None:
            util = ent.gr_engine_active * 100.0
    total = None
    if ent.fb_used_bytes is not None and ent.fb_free_bytes is not None:
        total = ent.fb_used_bytes + ent.fb_free_bytes
    temp = (
        ent.temperature_celsius
        if ent.temperature_celsius is not None
        else parent.temperature_celsius
    )
    power = ent.power_watts if ent.power_watts is not None else parent.power_watts
    return GpuUse(
        uuid=uuid,
        index=ent.index if ent.index is not None else parent.index,
        model=ent.model or parent.model,
        sharing=sharing,
        mig_profile=ent.mig_profile,
        utilization_percent=None if util is None else min(util, 100.0),
        memory_used_bytes=ent.fb_used_bytes,
        memory_total_bytes=total,
        temperature_celsius=temp,
        power_watts=power,
        last_updated=at.fetched_at,
        scope="device",
        device_key=f"{ent.uuid}/{ent.gpu_instance_id}" if ent.is_mig_instance else ent.uuid,
        note=note,
    )


# ---------------------------------------------------------------- NVML


def _join_nvml(
    reading: NvmlReading,
    tg: _Targets,
    claims: dict[tuple[CKey, str, str], _Claim],
    sharers: dict[str, set[tuple[str, str]]],
    replicated: set[str],
    notes: _Notes,
    node: str,
) -> tuple[GpuPodRow, ...]:
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
                claims[(ckey, kind, p.gpu_uuid)] = _Claim(
                    ckey=ckey, kind=kind, uuid=p.gpu_uuid, mig_profile=profile
                )

    uses: dict[tuple[CKey, str, str], GpuUse] = {}
    for k, c in claims.items():
        if not tg.wants(c.ckey):
            continue
        sharing = _sharing(c, sharers, replicated)
        if c.kind == "mig":
            found = migs.get(c.uuid)
            if found is None:
                notes.add(f"NVML does not list MIG device {c.uuid}")
                uses[k] = _bare_use(c, sharing=Sharing.MIG)
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
            uses[k] = _bare_use(c, sharing=sharing)
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
    return _rows(node, tg, uses)


def _split_use(
    dev: NvmlDevice,
    c: _Claim,
    procs: list[tuple[NvmlProcess, CKey | None]],
    reading: NvmlReading,
    notes: _Notes,
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
