"""Names of the orb8 API group and its resources."""

from __future__ import annotations

GROUP = "orb8.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

TRACE_SESSIONS = "tracesessions"
GPU_TELEMETRIES = "gputelemetries"
NODE_AGENT_CONFIGS = "nodeagentconfigs"

TRACE_SESSION = "TraceSession"
GPU_TELEMETRY = "GpuTelemetry"
NODE_AGENT_CONFIG = "NodeAgentConfig"
SESSION_KINDS = (TRACE_SESSION, GPU_TELEMETRY)

PLURAL_BY_KIND = {
    "TraceSession": TRACE_SESSIONS,
    "GpuTelemetry": GPU_TELEMETRIES,
    "NodeAgentConfig": NODE_AGENT_CONFIGS,
}
