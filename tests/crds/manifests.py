"""Valid manifests the CRD tests start from, and full status objects shaped as
the contracts in docs/architecture.md describe them."""

from __future__ import annotations

import copy
from typing import Any

API_VERSION = "orb8.io/v1alpha1"
T0 = "2026-11-29T05:00:00Z"
T1 = "2026-11-29T05:00:15Z"
CONTAINER_ID = "containerd://" + "ab" * 32


def trace_session(name: str, **spec: Any) -> dict[str, Any]:
    """A minimal valid TraceSession (network probe on), with ``spec`` merged over it."""
    base: dict[str, Any] = {
        "selector": {"podSelector": {"matchLabels": {"app": "checkout"}}},
        "probes": {"network": {"enabled": True}},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": API_VERSION,
        "kind": "TraceSession",
        "metadata": {"name": name},
        "spec": base,
    }


def gpu_telemetry(name: str, **spec: Any) -> dict[str, Any]:
    """A minimal valid GpuTelemetry (every pod, automatic source)."""
    base: dict[str, Any] = {"selector": {"podSelector": {}}}
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": API_VERSION,
        "kind": "GpuTelemetry",
        "metadata": {"name": name},
        "spec": base,
    }


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T0,
        "observedGeneration": 1,
    }


def flow(node: str, src_port: int, nbytes: int) -> dict[str, Any]:
    return {
        "source": {
            "namespace": "shop",
            "pod": "checkout-7d9f",
            "ip": "10.244.1.5",
            "port": src_port,
        },
        "destination": {"namespace": "shop", "pod": "cart-5c6b", "ip": "10.244.2.7", "port": 8080},
        "protocol": "TCP",
        "bytes": nbytes,
        "packets": 800,
        "firstSeen": T0,
        "lastSeen": T1,
        "node": node,
    }


def external_flow(node: str) -> dict[str, Any]:
    return {
        "source": {"namespace": "shop", "pod": "checkout-7d9f", "ip": "fd00:10:244::5", "port": 0},
        "destination": {"ip": "2001:db8::1", "port": 0},
        "protocol": "ICMPv6",
        "bytes": 6_442_450_944,  # > 2^32: counters are int64
        "packets": 3,
        "firstSeen": T0,
        "lastSeen": T1,
        "node": node,
    }


def alert(node: str) -> dict[str, Any]:
    return {
        "namespace": "shop",
        "pod": "checkout-7d9f",
        "container": "app",
        "node": node,
        "syscall": "ptrace",
        "count": 3,
        "severity": "High",
        "reason": "ptrace is on the alert list",
        "firstSeen": T0,
        "lastSeen": T1,
        "process": {"pid": 4242, "comm": "gdb"},
    }


def trace_node_entry(node: str, nbytes: int = 18_734_112) -> dict[str, Any]:
    return {
        "node": node,
        "state": "Running",
        "probes": ["flows", "syscalls"],
        "message": "",
        "lastReportTime": T1,
        "flowCount": 12,
        "bytes": nbytes,
        "packets": 14011,
        "alertCount": 1,
        "droppedEvents": 0,
        "flows": [flow(node, 43122, nbytes), external_flow(node)],
        "alerts": [alert(node)],
    }


def trace_session_status() -> dict[str, Any]:
    """Every field of TraceSession status, nested lists included."""
    return {
        "phase": "Running",
        "observedGeneration": 3,
        "conditions": [
            condition("Ready", "True", "AgentsReporting", "3 of 3 nodes report"),
            condition("Degraded", "False", "AllProbesLoaded"),
            condition("Complete", "False", "Running"),
        ],
        "startTime": T0,
        "completionTime": T1,
        "matchedPods": 6,
        "nodes": [trace_node_entry("node-a"), trace_node_entry("node-b", 1024)],
        "summary": {
            "flows": 41,
            "bytes": 18_735_136,
            "packets": 28022,
            "alerts": 1,
            "nodes": 3,
            "pods": 6,
        },
        "flows": [flow("node-a", 43122, 18_734_112), external_flow("node-b")],
        "alerts": [alert("node-a")],
    }


def gpu_pod_row(node: str, sharing: str = "exclusive") -> dict[str, Any]:
    return {
        "namespace": "ml",
        "pod": "trainer-0",
        "container": "main",
        "node": node,
        "gpus": [
            {
                "uuid": "GPU-5f2c3f3e-8d1a-4a51-9e33-0c6f6f2f5d11",
                "index": 0,
                "model": "NVIDIA H100 80GB HBM3",
                "sharing": sharing,
                "migProfile": "1g.10gb" if sharing == "mig" else "",
                "utilizationPercent": 87.5,
                "memoryUsedBytes": 42_949_672_960,
                "memoryTotalBytes": 85_899_345_920,
                "temperatureCelsius": 61.0,
                "powerWatts": 412.5,
                "lastUpdated": T1,
            }
        ],
    }


def gpu_alert(node: str) -> dict[str, Any]:
    return {
        "namespace": "ml",
        "pod": "trainer-0",
        "container": "main",
        "node": node,
        "gpu": "GPU-5f2c3f3e-8d1a-4a51-9e33-0c6f6f2f5d11",
        "kind": "MemoryHigh",
        "message": "memory 93.5% used (threshold 90%)",
        "value": 93.5,
        "firstSeen": T0,
        "lastSeen": T1,
    }


def gpu_telemetry_status() -> dict[str, Any]:
    return {
        "phase": "Running",
        "observedGeneration": 1,
        "conditions": [condition("Ready", "True", "AgentsReporting")],
        "startTime": T0,
        "matchedPods": 2,
        "nodes": [
            {
                "node": "gpu-node-1",
                "state": "Running",
                "source": "dcgmExporter",
                "message": "",
                "lastReportTime": T1,
                "pods": [gpu_pod_row("gpu-node-1"), gpu_pod_row("gpu-node-1", "mig")],
                "alerts": [gpu_alert("gpu-node-1")],
            }
        ],
        "summary": {
            "gpus": 2,
            "pods": 2,
            "avgUtilization": 87.5,
            "memoryUsedBytes": 85_899_345_920,
        },
        "pods": [gpu_pod_row("gpu-node-1"), gpu_pod_row("gpu-node-1", "time-sliced")],
        "alerts": [gpu_alert("gpu-node-1")],
    }


def node_agent_config(node: str) -> dict[str, Any]:
    """The NodeAgentConfig of the contract in docs/architecture.md, spec and status."""
    return {
        "apiVersion": API_VERSION,
        "kind": "NodeAgentConfig",
        "metadata": {"name": node},
        "spec": {
            "nodeName": node,
            "sessions": [
                {
                    "uid": "6f1c2f0e-3b7a-4d8e-9b61-2a1d5c0f7e10",
                    "kind": "TraceSession",
                    "namespace": "shop",
                    "name": "checkout-debug",
                    "generation": 3,
                    "pods": [
                        {
                            "uid": "0b6d3f4e-1111-4c2d-8e9f-0a1b2c3d4e5f",
                            "namespace": "shop",
                            "name": "checkout-7d9f",
                            "ips": ["10.244.1.5"],
                            "hostNetwork": False,
                            "containers": [{"name": "app", "id": CONTAINER_ID}],
                        }
                    ],
                },
                {
                    "uid": "9a8b7c6d-2222-4e5f-9a0b-1c2d3e4f5a6b",
                    "kind": "GpuTelemetry",
                    "namespace": "ml",
                    "name": "training-gpus",
                    "generation": 1,
                    "pods": [
                        {
                            "uid": "1c7e4a5f-3333-4d3e-9f0a-1b2c3d4e5f6a",
                            "namespace": "ml",
                            "name": "trainer-0",
                            "ips": ["10.244.1.9", "fd00:10:244::9"],
                            "hostNetwork": True,
                            "containers": [{"name": "main", "id": ""}],
                        }
                    ],
                },
            ],
        },
    }


def node_agent_config_status() -> dict[str, Any]:
    return {
        "agentVersion": "0.1.0",
        "heartbeat": T0,
        "kernel": {"release": "6.18.44", "btf": True},
        "capabilities": ["BPF", "PERFMON", "NET_ADMIN"],
        "probes": [
            {"name": "flows", "loadable": True, "message": ""},
            {
                "name": "syscalls",
                "loadable": False,
                "message": "raw_syscalls tracepoint missing: mount tracefs",
            },
        ],
        "conditions": [condition("Ready", "True", "ProbesChecked")],
        "reports": [
            {
                "uid": "6f1c2f0e-3b7a-4d8e-9b61-2a1d5c0f7e10",
                "kind": "TraceSession",
                "namespace": "shop",
                "name": "checkout-debug",
                "generation": 3,
                "trace": trace_session_status()["nodes"][0],
            },
            {
                "uid": "9a8b7c6d-2222-4e5f-9a0b-1c2d3e4f5a6b",
                "kind": "GpuTelemetry",
                "namespace": "ml",
                "name": "training-gpus",
                "generation": 1,
                "gpu": gpu_telemetry_status()["nodes"][0],
            },
        ],
    }
