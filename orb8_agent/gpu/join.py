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
  device is a MIG instance (``MIG-<uuid>``); ``exclusive`` otherwise, but
  ``unknown`` when pod-resources failed (the exporter labels one pod per GPU,
  so a GPU it shows with one pod may have other sharers); a note then says
  that attribution is partial.
* A MIG instance whose ``MIG-<uuid>`` is unknown (no pod-resources) is named
  ``MIG-<parent GPU uuid>/<GPU instance id>`` (the pre-R470 MIG device name
  without the compute instance), so each instance stays a distinct device.
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

from collections.abc import Sequence
from dataclasses import dataclass

from orb8_agent.gpu.claims import Claim, ClaimSet, Targets, bare_use, build_rows
from orb8_agent.gpu.devices import DeviceRef, mig_profile_of, parse_device_id
from orb8_agent.gpu.join_dcgm import join_exporter
from orb8_agent.gpu.join_nvml import join_nvml
from orb8_agent.gpu.model import (
    ExporterScrape,
    GpuPodRow,
    NvmlReading,
    PodResourcesView,
    TargetPod,
)

__all__ = ["DeviceRef", "JoinResult", "join", "mig_profile_of", "parse_device_id"]


@dataclass(frozen=True, slots=True)
class JoinResult:
    rows: tuple[GpuPodRow, ...]
    notes: tuple[str, ...]


def join(
    *,
    node: str,
    targets: Sequence[TargetPod],
    exporter: ExporterScrape | None = None,
    nvml: NvmlReading | None = None,
    resources: PodResourcesView | None = None,
) -> JoinResult:
    """Rows for the target pods only. Readings come from the exporter when given, else NVML."""
    state = ClaimSet(targets=Targets(targets))
    if resources is not None:
        _claims_from_pod_resources(resources, state)
    elif exporter is not None:
        state.allocations_known = False
        state.notes.add(
            "attribution is partial: without pod-resources only the pods dcgm-exporter"
            " labels are shown (it labels one pod per GPU, so other sharers are missing)"
            " and GPU sharing is unknown"
        )
    if exporter is not None:
        rows = join_exporter(scrape=exporter, nvml=nvml, state=state, node=node)
    elif nvml is not None:
        rows = join_nvml(reading=nvml, state=state, node=node)
    else:
        uses = {k: bare_use(c, sharing=state.sharing(c)) for k, c in state.claims.items()}
        rows = build_rows(node, state.targets, uses)
    return JoinResult(rows=rows, notes=tuple(state.notes.items))


def _claims_from_pod_resources(resources: PodResourcesView, state: ClaimSet) -> None:
    for dev in resources.allocatable:
        ref = parse_device_id(dev.device_id)
        if ref.kind == "replica":
            state.replicated.add(ref.uuid)
        elif ref.kind == "mig":
            state.mig_ids_by_profile[mig_profile_of(dev.resource_name)].add(ref.uuid)
    for a in resources.allocations:
        ref = parse_device_id(a.device_id)
        ckey = (a.namespace, a.pod, a.container)
        if ref.kind in ("gpu", "replica"):
            if ref.kind == "replica":
                state.replicated.add(ref.uuid)
            state.sharers[ref.uuid].add((a.namespace, a.pod))
            state.add(Claim(ckey=ckey, kind="gpu", uuid=ref.uuid))
        elif ref.kind == "mig":
            profile = mig_profile_of(a.resource_name)
            state.mig_ids_by_profile[profile].add(ref.uuid)
            state.add(Claim(ckey=ckey, kind="mig", uuid=ref.uuid, mig_profile=profile))
        elif state.targets.wants(ckey):
            state.notes.add(
                f"{a.resource_name} id {a.device_id!r} is not a GPU or MIG UUID; skipped"
            )
