"""The join with dcgm-exporter readings, including matching MIG ids to instance lines."""

from __future__ import annotations

from collections import defaultdict

from orb8_agent.gpu.claims import (
    CKey,
    Claim,
    ClaimKey,
    ClaimSet,
    EntityKey,
    Notes,
    bare_use,
    build_rows,
)
from orb8_agent.gpu.model import (
    DcgmEntity,
    ExporterScrape,
    GpuPodRow,
    GpuUse,
    NvmlReading,
    Sharing,
)


def join_exporter(
    *, scrape: ExporterScrape, nvml: NvmlReading | None, state: ClaimSet, node: str
) -> tuple[GpuPodRow, ...]:
    """Rows with dcgm-exporter readings; NVML, when given, only ties MIG ids to instances."""
    tg, claims, sharers, notes = state.targets, state.claims, state.sharers, state.notes
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
            claims.setdefault(claim_key, Claim(ckey=ckey, kind="gpu", uuid=e.uuid))

    bound, candidates = _bind_mig(claims, instances, nvml, state.mig_ids_by_profile)

    uses: dict[ClaimKey, GpuUse] = {}
    for k, c in claims.items():
        if not tg.wants(c.ckey):
            continue
        sharing = state.sharing(c)
        if c.kind == "gpu":
            ent = parents.get(c.uuid)
            if ent is None:
                notes.add(
                    f"no dcgm-exporter readings for {c.uuid} (used by {c.ckey[0]}/{c.ckey[1]})"
                )
                uses[k] = bare_use(c, sharing=sharing)
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
                inst,
                parent,
                uuid=c.uuid or instance_name(inst),
                sharing=Sharing.MIG,
                at=scrape,
                note="",
            )
    return build_rows(node, tg, uses)


def instance_name(inst: DcgmEntity) -> str:
    """A MIG instance's name when its MIG-<uuid> is unknown: parent uuid and GPU_I_ID.

    The parent's uuid alone would make every instance on a GPU one device.
    """
    return f"MIG-{inst.uuid}/{inst.gpu_instance_id}"


def _bind_mig(
    claims: dict[ClaimKey, Claim],
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
    by_ckey: dict[CKey, list[Claim]] = defaultdict(list)
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
                c = Claim(
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
    c: Claim, candidates: list[EntityKey], meta: dict[str, DcgmEntity], notes: Notes
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
