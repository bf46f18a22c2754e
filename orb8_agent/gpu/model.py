"""Value types shared by the GPU telemetry modules.

Everything here is an immutable dataclass so that parsing, joining and alert
evaluation stay pure functions over plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal


class Sharing(StrEnum):
    EXCLUSIVE = "exclusive"
    TIME_SLICED = "time-sliced"
    MIG = "mig"
    # Without the kubelet's pod-resources, a GPU the exporter shows one pod on
    # may still be shared with pods it does not label.
    UNKNOWN = "unknown"


def rfc3339(ts: datetime) -> str:
    """UTC timestamp with second precision, as Kubernetes prints them."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class TargetContainer:
    name: str
    # Runtime-qualified id as the pod status has it ("containerd://<hex>"), or "".
    id: str = ""

    @property
    def bare_id(self) -> str:
        return self.id.split("://", 1)[-1]


@dataclass(frozen=True, slots=True)
class TargetPod:
    """A pod a GpuTelemetry session asked about (from NodeAgentConfig.spec.sessions[].pods)."""

    namespace: str
    name: str
    uid: str = ""
    containers: tuple[TargetContainer, ...] = ()


# ---------------------------------------------------------------- exporter


@dataclass(frozen=True, slots=True)
class PodLabels:
    namespace: str
    pod: str
    container: str


@dataclass(frozen=True, slots=True)
class DcgmEntity:
    """One GPU, or one MIG GPU instance, as dcgm-exporter reported it.

    Readings are None when the exporter did not print the field or printed a
    DCGM blank sentinel.
    """

    uuid: str  # the physical GPU's UUID (also on MIG instance lines)
    index: int | None
    device: str
    model: str
    hostname: str
    mig_profile: str = ""  # GPU_I_PROFILE
    gpu_instance_id: int | None = None  # GPU_I_ID
    gpu_util_percent: float | None = None
    fb_used_bytes: int | None = None
    fb_free_bytes: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    sm_clock_mhz: float | None = None
    gr_engine_active: float | None = None  # 0..1
    pods: tuple[PodLabels, ...] = ()

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.uuid, self.gpu_instance_id)

    @property
    def is_mig_instance(self) -> bool:
        return self.gpu_instance_id is not None


@dataclass(frozen=True, slots=True)
class ExporterScrape:
    fetched_at: datetime
    entities: tuple[DcgmEntity, ...]
    # Samples of wanted fields that could not be tied to a device, e.g.
    # "3 DCGM_FI_DEV_GPU_UTIL sample(s) without a UUID label".
    lost: tuple[str, ...] = ()


# ---------------------------------------------------------------- pod-resources


@dataclass(frozen=True, slots=True)
class DeviceAllocation:
    """One device id the kubelet handed to one container."""

    namespace: str
    pod: str
    container: str
    resource_name: str
    device_id: str


@dataclass(frozen=True, slots=True)
class AllocatableDevice:
    resource_name: str
    device_id: str


@dataclass(frozen=True, slots=True)
class PodResourcesView:
    fetched_at: datetime
    allocations: tuple[DeviceAllocation, ...]
    allocatable: tuple[AllocatableDevice, ...] = ()
    # Set when List answered but GetAllocatableResources failed: the
    # allocations stand, the allocatable list is missing.
    problem: str = ""


# ---------------------------------------------------------------- NVML


@dataclass(frozen=True, slots=True)
class NvmlMigInstance:
    uuid: str  # MIG-...
    parent_uuid: str
    gpu_instance_id: int | None
    profile: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True, slots=True)
class NvmlDevice:
    uuid: str
    index: int
    model: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_celsius: float | None
    power_watts: float | None
    mig_instances: tuple[NvmlMigInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class NvmlProcess:
    """A process using a GPU, with the pod it belongs to when its cgroup says so."""

    gpu_uuid: str  # physical GPU, or MIG-... when it runs on a MIG instance
    pid: int
    used_memory_bytes: int | None
    sm_util_percent: float | None
    pod_uid: str | None
    container_id: str | None
    # False when /proc/<pid>/cgroup could not be read: the owner is unknown,
    # not merely "no pod" (a host process).
    cgroup_read: bool = True


@dataclass(frozen=True, slots=True)
class NvmlReading:
    read_at: datetime
    devices: tuple[NvmlDevice, ...]
    processes: tuple[NvmlProcess, ...] = ()


# ---------------------------------------------------------------- results


Scope = Literal["device", "process"]


@dataclass(frozen=True, slots=True)
class GpuUse:
    """One GPU (or MIG instance, or time-slice) one container uses.

    ``scope`` says whether the readings are the whole device's ("device") or
    this container's own share measured per process ("process"); ``note``
    explains anything a reader could misread. Neither is part of the status
    row: they feed the node message and the summary.
    """

    uuid: str
    index: int | None
    model: str
    sharing: Sharing
    mig_profile: str = ""
    utilization_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    last_updated: datetime | None = None
    scope: Scope = "device"
    device_key: str = ""  # identifies the physical GPU or MIG instance for de-duplication
    note: str = ""

    def to_status(self) -> dict[str, Any]:
        """The row's `gpus[]` entry; unknown readings are left out, never zero-filled."""
        out: dict[str, Any] = {
            "uuid": self.uuid,
            "model": self.model,
            "sharing": self.sharing.value,
            "migProfile": self.mig_profile,
        }
        if self.index is not None:
            out["index"] = self.index
        if self.utilization_percent is not None:
            out["utilizationPercent"] = round(self.utilization_percent, 2)
        if self.memory_used_bytes is not None:
            out["memoryUsedBytes"] = self.memory_used_bytes
        if self.memory_total_bytes is not None:
            out["memoryTotalBytes"] = self.memory_total_bytes
        if self.temperature_celsius is not None:
            out["temperatureCelsius"] = self.temperature_celsius
        if self.power_watts is not None:
            out["powerWatts"] = round(self.power_watts, 3)
        if self.last_updated is not None:
            out["lastUpdated"] = rfc3339(self.last_updated)
        return out


@dataclass(frozen=True, slots=True)
class GpuPodRow:
    namespace: str
    pod: str
    container: str
    node: str
    gpus: tuple[GpuUse, ...]

    def to_status(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "node": self.node,
            "gpus": [g.to_status() for g in self.gpus],
        }


class AlertKind(StrEnum):
    IDLE = "Idle"
    MEMORY_HIGH = "MemoryHigh"


@dataclass(frozen=True, slots=True)
class GpuAlert:
    namespace: str
    pod: str
    container: str
    node: str
    gpu: str
    kind: AlertKind
    message: str
    first_seen: datetime
    last_seen: datetime
    value: float

    def to_status(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "node": self.node,
            "gpu": self.gpu,
            "kind": self.kind.value,
            "message": self.message,
            "value": round(self.value, 2),
            "firstSeen": rfc3339(self.first_seen),
            "lastSeen": rfc3339(self.last_seen),
        }


@dataclass(frozen=True, slots=True)
class GpuSummary:
    gpus: int
    pods: int
    avg_utilization: float | None
    memory_used_bytes: int | None  # None when no device reported its memory

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gpus": self.gpus, "pods": self.pods}
        if self.memory_used_bytes is not None:
            out["memoryUsedBytes"] = self.memory_used_bytes
        if self.avg_utilization is not None:
            out["avgUtilization"] = round(self.avg_utilization, 2)
        return out


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """How one source fared in one scrape."""

    name: Literal["dcgmExporter", "nvml", "podResources"]
    ok: bool
    message: str = ""


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    """What one scrape produced; the agent turns it into its node's status entry."""

    node: str
    taken_at: datetime
    source: str  # "dcgmExporter", "nvml" or "" when no source answered
    rows: tuple[GpuPodRow, ...]
    alerts: tuple[GpuAlert, ...]
    summary: GpuSummary
    sources: tuple[SourceHealth, ...]
    notes: tuple[str, ...] = ()
    degraded: bool = False

    @property
    def message(self) -> str:
        """One line for status.nodes[].message: failed sources first, then notes."""
        parts = [f"{s.name}: {s.message}" for s in self.sources if not s.ok and s.message]
        parts.extend(self.notes)
        return "; ".join(parts)[:4096]

    @property
    def state(self) -> str:
        if not self.source:
            return "Failed"
        return "Degraded" if self.degraded else "Running"

    def to_status(self, *, max_rows: int = 256, max_alerts: int = 1000) -> dict[str, Any]:
        """This node's share of status (without the fields the agent adds itself)."""
        message = self.message
        if len(self.rows) > max_rows:
            cut = f"{len(self.rows) - max_rows} container row(s) left out (limit {max_rows})"
            message = f"{message}; {cut}" if message else cut
        return {
            "node": self.node,
            "state": self.state,
            "source": self.source,
            "message": message[:4096],
            "lastReportTime": rfc3339(self.taken_at),
            "pods": [r.to_status() for r in self.rows[:max_rows]],
            "alerts": [a.to_status() for a in self.alerts[:max_alerts]],
        }


EMPTY_SUMMARY = GpuSummary(gpus=0, pods=0, avg_utilization=None, memory_used_bytes=None)

__all__ = [
    "EMPTY_SUMMARY",
    "AlertKind",
    "AllocatableDevice",
    "DcgmEntity",
    "DeviceAllocation",
    "ExporterScrape",
    "GpuAlert",
    "GpuPodRow",
    "GpuSnapshot",
    "GpuSummary",
    "GpuUse",
    "NvmlDevice",
    "NvmlMigInstance",
    "NvmlProcess",
    "NvmlReading",
    "PodLabels",
    "PodResourcesView",
    "Sharing",
    "SourceHealth",
    "TargetContainer",
    "TargetPod",
]
