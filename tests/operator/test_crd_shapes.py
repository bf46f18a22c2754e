"""What the operator writes must fit the CRD schemas, or the apiserver prunes it.

Walks the wire dicts against the OpenAPI schemas in crds/*.yaml: unknown
fields, wrong types, enum values and missing required fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orb8_common.models import format_time, to_wire
from orb8_operator.nodeconfig import build_node_configs
from orb8_operator.reconcile import reconcile_session

from .factories import alert, at, flow, pod

CRDS = Path(__file__).resolve().parents[2] / "crds"
pytestmark = pytest.mark.skipif(
    not (CRDS / "tracesessions.yaml").exists(), reason="crds/ not on this branch yet"
)


def _schema(plural: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / f"{plural}.yaml").read_text())
    schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    kind = schema.get("type")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                _check(item, props[key], f"{path}.{key}", errors)
            elif isinstance(extra, dict):
                _check(item, extra, f"{path}.{key}", errors)
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: not in the schema (would be pruned)")
        errors.extend(
            f"{path}: missing required {r}" for r in schema.get("required", ()) if r not in value
        )
        if kind != "object":
            errors.append(f"{path}: object where the schema has {kind}")
    elif isinstance(value, list):
        if kind != "array":
            errors.append(f"{path}: array where the schema has {kind}")
            return
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{i}]", errors)
    elif value is None:
        return  # a merge patch's null removes the field
    else:
        expected = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
        if not (kind == expected or (kind == "number" and expected == "integer")):
            errors.append(f"{path}: {expected} where the schema has {kind}")
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{path}: {value!r} not in {schema['enum']}")


def _body(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = {"uid": "u1", "namespace": "shop", "name": "s", "generation": 1}
    return {"metadata": meta, "spec": spec, "status": status}


PODS = [pod("a", node="node-a", labels={"app": "x"})]


def test_trace_session_status_and_node_config_fit_the_crds() -> None:
    spec = {
        "selector": {"podSelector": {"matchLabels": {"app": "x"}}},
        "probes": {"network": {"enabled": True}, "syscalls": {"enabled": True}},
        "duration": "10m",
    }
    nodes = [
        {
            "node": "node-a",
            "state": "Degraded",
            "flows": [to_wire(flow("10.0.0.1", "10.0.0.2", src_pod="a"))],
            "alerts": [to_wire(alert("a", "ptrace"))],
        }
    ]
    out = reconcile_session(
        kind="TraceSession",
        body=_body(spec, {"nodes": nodes, "startTime": format_time(at(0))}),
        pods=PODS,
        node_labels={},
        now=at(30),
    )
    errors: list[str] = []
    _check(out.status, _schema("tracesessions")["properties"]["status"], "status", errors)
    assert out.active is not None
    for node, nac in build_node_configs(sessions=[out.active]).items():
        _check(to_wire(nac), _schema("nodeagentconfigs")["properties"]["spec"], node, errors)
    assert errors == []


def test_gpu_telemetry_status_and_node_config_fit_the_crds() -> None:
    spec = {
        "selector": {"podSelector": {}},
        "source": {"dcgmExporter": {"port": 9400}},
        "alerts": {"idleUtilizationPercent": 5, "idleFor": "10m", "memoryUsedPercent": 90},
    }
    device = {
        "uuid": "GPU-1",
        "index": 0,
        "sharing": "mig",
        "migProfile": "1g.10gb",
        "utilizationPercent": 3.5,
        "memoryUsedBytes": 5,
        "memoryTotalBytes": 10,
        "temperatureCelsius": 40,
        "powerWatts": 50.5,
        "lastUpdated": format_time(at(1)),
    }
    gpu_alert = {"namespace": "shop", "pod": "a", "gpu": "GPU-1", "kind": "Idle", "value": 3.5}
    nodes = [
        {
            "node": "node-a",
            "state": "Running",
            "source": "dcgmExporter",
            "pods": [{"namespace": "shop", "pod": "a", "container": "m", "gpus": [device]}],
            "alerts": [gpu_alert],
        }
    ]
    out = reconcile_session(
        kind="GpuTelemetry",
        body=_body(spec, {"nodes": nodes}),
        pods=PODS,
        node_labels={},
        now=at(0),
    )
    errors: list[str] = []
    _check(out.status, _schema("gputelemetries")["properties"]["status"], "status", errors)
    assert out.active is not None
    for node, nac in build_node_configs(sessions=[out.active]).items():
        _check(to_wire(nac), _schema("nodeagentconfigs")["properties"]["spec"], node, errors)
    assert errors == []
