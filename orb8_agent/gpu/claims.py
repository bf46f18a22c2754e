"""Who uses which GPU: the working state the join modules share.

A claim says "this container uses this GPU (or MIG instance)". Claims come
from pod-resources, exporter labels and NVML processes; ``ClaimSet`` also
remembers every pod on each physical GPU, which GPUs have time-slicing
replica ids, and the notes the join wants to pass on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from orb8_agent.gpu.model import GpuPodRow, GpuUse, NvmlProcess, Sharing, TargetPod

MAX_GPUS_PER_ROW = 16
MAX_NOTES = 20

CKey = tuple[str, str, str]  # namespace, pod, container
EntityKey = tuple[str, int | None]  # physical uuid, GPU instance id
ClaimKey = tuple[CKey, str, str]  # container, kind, uuid (or instance)


@dataclass
class Claim:
    ckey: CKey
    kind: str  # "gpu" (whole or replica) or "mig"
    uuid: str  # physical uuid for gpu; MIG-... for mig ("" when only the instance is known)
    mig_profile: str = ""
    instance: EntityKey | None = None  # exporter instance for mig claims


@dataclass
class Notes:
    items: dict[str, None] = field(default_factory=dict)

    def add(self, text: str) -> None:
        if len(self.items) < MAX_NOTES:
            self.items[text] = None


class Targets:
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


@dataclass
class ClaimSet:
    targets: Targets
    notes: Notes = field(default_factory=Notes)
    claims: dict[ClaimKey, Claim] = field(default_factory=dict)
    # Pods on each physical GPU (all pods, not only targets).
    sharers: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    # Physical GPUs the kubelet hands out as time-slicing replicas.
    replicated: set[str] = field(default_factory=set)
    # Every MIG id the kubelet knows (allocated or allocatable), by profile.
    mig_ids_by_profile: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # False without the kubelet's allocations: a GPU seen with one pod may
    # have more sharers that nothing reported, so it is not "exclusive".
    allocations_known: bool = True

    def add(self, c: Claim) -> None:
        self.claims.setdefault((c.ckey, c.kind, c.uuid or repr(c.instance)), c)

    def sharing(self, c: Claim) -> Sharing:
        return sharing_of(
            c, self.sharers, self.replicated, allocations_known=self.allocations_known
        )


def sharing_of(
    c: Claim,
    sharers: dict[str, set[tuple[str, str]]],
    replicated: set[str],
    *,
    allocations_known: bool = True,
) -> Sharing:
    if c.kind == "mig":
        return Sharing.MIG
    if c.uuid in replicated or len(sharers.get(c.uuid, ())) > 1:
        return Sharing.TIME_SLICED
    return Sharing.EXCLUSIVE if allocations_known else Sharing.UNKNOWN


def bare_use(c: Claim, *, sharing: Sharing, note: str = "") -> GpuUse:
    return GpuUse(
        uuid=c.uuid,
        index=None,
        model="",
        sharing=sharing,
        mig_profile=c.mig_profile,
        device_key=c.uuid,
        note=note,
    )


def build_rows(node: str, tg: Targets, uses: dict[ClaimKey, GpuUse]) -> tuple[GpuPodRow, ...]:
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
