"""Parse dcgm-exporter's Prometheus text into per-GPU (and per-MIG-instance) readings.

The text goes through the exposition tokenizer (orb8_agent.gpu.exposition);
this module decides which samples matter, converts units and drops DCGM's
"blank" sentinels, which mean "no data" and must never be shown as readings.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from orb8_agent.gpu.errors import ExporterFormatError
from orb8_agent.gpu.exposition import iter_samples
from orb8_agent.gpu.model import DcgmEntity, ExporterScrape, PodLabels

MIB = 1024 * 1024

# DCGM's blank values (dcgm_structs.h): a blank, then "not found",
# "not supported" and "not permissioned" at +1, +2, +3. Anything at or above
# the lowest of them is a sentinel, never a reading.
DCGM_INT32_BLANK = 0x7FFFFFF0
DCGM_INT64_BLANK = 0x7FFFFFFFFFFFFFF0
DCGM_FP64_BLANK = 140737488355328.0  # 2**47

Kind = Literal["int", "float"]

# metric name -> (entity attribute, value kind)
FIELDS: dict[str, tuple[str, Kind]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("gpu_util_percent", "int"),
    "DCGM_FI_DEV_FB_USED": ("fb_used_bytes", "int"),
    "DCGM_FI_DEV_FB_FREE": ("fb_free_bytes", "int"),
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_celsius", "int"),
    "DCGM_FI_DEV_POWER_USAGE": ("power_watts", "float"),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", "int"),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gr_engine_active", "float"),
}

# Kubernetes-mode pod labels; older exporters (and --kubernetes-use-old-namespace)
# spell them pod_name / pod_namespace / container_name.
_POD_LABELS = (("namespace", "pod", "container"), ("pod_namespace", "pod_name", "container_name"))


def is_blank(value: float, *, kind: Kind) -> bool:
    """True when a value is a DCGM sentinel (or otherwise not a reading)."""
    if math.isnan(value) or math.isinf(value) or value < 0:
        return True
    if kind == "int":
        return value >= DCGM_INT32_BLANK
    return value >= DCGM_FP64_BLANK


@dataclass
class _Builder:
    uuid: str
    index: int | None
    device: str
    model: str
    hostname: str
    mig_profile: str
    gpu_instance_id: int | None
    values: dict[str, float] = field(default_factory=dict)
    pods: dict[PodLabels, None] = field(default_factory=dict)

    def freeze(self) -> DcgmEntity:
        v = self.values

        def as_int(name: str, scale: int = 1) -> int | None:
            x = v.get(name)
            return None if x is None else int(x) * scale

        gr = v.get("gr_engine_active")
        return DcgmEntity(
            uuid=self.uuid,
            index=self.index,
            device=self.device,
            model=self.model,
            hostname=self.hostname,
            mig_profile=self.mig_profile,
            gpu_instance_id=self.gpu_instance_id,
            gpu_util_percent=v.get("gpu_util_percent"),
            fb_used_bytes=as_int("fb_used_bytes", MIB),
            fb_free_bytes=as_int("fb_free_bytes", MIB),
            temperature_celsius=v.get("temperature_celsius"),
            power_watts=v.get("power_watts"),
            sm_clock_mhz=v.get("sm_clock_mhz"),
            gr_engine_active=None if gr is None else min(gr, 1.0),
            pods=tuple(self.pods),
        )


def _int_label(labels: dict[str, str], name: str) -> int | None:
    raw = labels.get(name, "")
    try:
        return int(raw)
    except ValueError:
        return None


def _pod_labels(labels: dict[str, str]) -> PodLabels | None:
    for ns_key, pod_key, ctr_key in _POD_LABELS:
        pod = labels.get(pod_key, "")
        if pod:
            return PodLabels(
                namespace=labels.get(ns_key, ""), pod=pod, container=labels.get(ctr_key, "")
            )
    return None


def parse_exposition(text: str, *, fetched_at: datetime) -> ExporterScrape:
    """Parse one /metrics body. Raises ExporterFormatError for anything but valid text."""
    if not text.strip():
        raise ExporterFormatError("dcgm-exporter returned an empty body")
    builders: dict[tuple[str, int | None], _Builder] = {}
    lost: Counter[tuple[str, str]] = Counter()
    found = False
    try:
        for sample in iter_samples(text, wanted=FIELDS):
            found = True
            labels = sample.labels
            uuid = labels.get("UUID") or labels.get("uuid") or ""
            if not uuid:
                lost[(sample.name, "without a UUID label")] += 1
                continue
            gi_id = _int_label(labels, "GPU_I_ID")
            if gi_id is None and (labels.get("GPU_I_PROFILE") or labels.get("GPU_I_ID")):
                # A MIG instance line that names no instance: counting it as the
                # whole GPU's reading would be wrong.
                lost[(sample.name, "of a MIG instance without a valid GPU_I_ID label")] += 1
                continue
            key = (uuid, gi_id)
            b = builders.get(key)
            if b is None:
                b = builders[key] = _Builder(
                    uuid=uuid,
                    index=_int_label(labels, "gpu"),
                    device=labels.get("device", ""),
                    model=labels.get("modelName", ""),
                    hostname=labels.get("Hostname") or labels.get("hostname") or "",
                    mig_profile=labels.get("GPU_I_PROFILE", ""),
                    gpu_instance_id=gi_id,
                )
            pod = _pod_labels(labels)
            if pod is not None:
                b.pods[pod] = None
            attr, kind = FIELDS[sample.name]
            if attr not in b.values and not is_blank(sample.value, kind=kind):
                b.values[attr] = sample.value
    except ExporterFormatError as exc:
        raise ExporterFormatError(
            f"dcgm-exporter text is not valid Prometheus exposition: {exc}"
        ) from None
    if not found:
        if "DCGM_" not in text:
            raise ExporterFormatError("the response has no DCGM_* metrics; is this dcgm-exporter?")
        raise ExporterFormatError(
            "dcgm-exporter exports none of the fields orb8 reads ("
            + ", ".join(FIELDS)
            + "); add them to its counters file"
        )
    entities = tuple(b.freeze() for b in builders.values())
    return ExporterScrape(
        fetched_at=fetched_at,
        entities=entities,
        lost=tuple(f"{n} {name} sample(s) {why}" for (name, why), n in sorted(lost.items())),
    )
