"""GPU telemetry for the node agent: dcgm-exporter or NVML readings joined to pods.

The agent builds one :class:`GpuCollector` per GpuTelemetry session on its
node and awaits ``scrape(targets=...)`` every interval; the snapshot's
``to_status()`` is the node's entry of ``status.nodes``.
"""

from orb8_agent.gpu.alerts import AlertPolicy, AlertTracker, evaluate_alerts
from orb8_agent.gpu.collector import GpuCollector
from orb8_agent.gpu.config import GpuSettings, gpu_settings
from orb8_agent.gpu.metrics import GpuMetrics
from orb8_agent.gpu.model import (
    GpuAlert,
    GpuPodRow,
    GpuSnapshot,
    GpuSummary,
    GpuUse,
    Sharing,
    SourceHealth,
    TargetContainer,
    TargetPod,
)
from orb8_agent.gpu.summary import summarize, summarize_nodes

__all__ = [
    "AlertPolicy",
    "AlertTracker",
    "GpuAlert",
    "GpuCollector",
    "GpuMetrics",
    "GpuPodRow",
    "GpuSettings",
    "GpuSnapshot",
    "GpuSummary",
    "GpuUse",
    "Sharing",
    "SourceHealth",
    "TargetContainer",
    "TargetPod",
    "evaluate_alerts",
    "gpu_settings",
    "summarize",
    "summarize_nodes",
]
