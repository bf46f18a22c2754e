"""The CRD schemas and the orb8_common models agree field by field.

The models are the one contract (what the operator and the agents parse and
write); the CRDs are what the apiserver validates and prunes. A field the
apiserver does not declare is silently dropped; a field the model requires
but the CRD does not lets the apiserver store objects the model refuses; a
default that differs makes the same spec mean two things. So for every
model and the CRD schema it travels in, this walks both schemas together and
compares names, types, enums, numeric bounds, required fields and defaults.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from orb8_common.models import (
    Alert,
    Condition,
    Flow,
    GpuAlert,
    GpuNodeEntry,
    GpuPodRow,
    GpuSummary,
    GpuTelemetrySpec,
    NodeAgentConfigSpec,
    NodeAgentConfigStatus,
    NodeEntry,
    SessionStatusHead,
    TraceSessionSpec,
    TraceSummary,
)
from orb8_dev.gen_crds import all_crds

Schema = dict[str, Any]

# CRD-only fields the models deliberately leave out, with the reason.
CRD_ONLY: dict[str, str] = {}
# Model fields the CRD deliberately leaves out, with the reason.
MODEL_ONLY: dict[str, str] = {}


def _crd_schema(kind: str) -> Schema:
    for crd in all_crds().values():
        if crd["spec"]["names"]["kind"] == kind:
            schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(kind)


def _at(schema: Schema, path: str) -> Schema:
    for part in path.split("."):
        schema = schema["items"] if part == "[]" else schema["properties"][part]
    return schema


PAIRS: list[tuple[type[BaseModel], str, str]] = [
    (TraceSessionSpec, "TraceSession", "spec"),
    (GpuTelemetrySpec, "GpuTelemetry", "spec"),
    (NodeAgentConfigSpec, "NodeAgentConfig", "spec"),
    (NodeAgentConfigStatus, "NodeAgentConfig", "status"),
    (NodeEntry, "TraceSession", "status.nodes.[]"),
    (NodeEntry, "NodeAgentConfig", "status.reports.[].trace"),
    (GpuNodeEntry, "GpuTelemetry", "status.nodes.[]"),
    (GpuNodeEntry, "NodeAgentConfig", "status.reports.[].gpu"),
    (TraceSummary, "TraceSession", "status.summary"),
    (GpuSummary, "GpuTelemetry", "status.summary"),
    (Flow, "TraceSession", "status.flows.[]"),
    (Alert, "TraceSession", "status.alerts.[]"),
    (GpuPodRow, "GpuTelemetry", "status.pods.[]"),
    (GpuAlert, "GpuTelemetry", "status.alerts.[]"),
    (Condition, "TraceSession", "status.conditions.[]"),
]


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Follow $ref and drop pydantic's Optional wrapper (anyOf [X, null])."""
    while True:
        if "$ref" in schema:
            schema = {**defs[schema["$ref"].rsplit("/", 1)[1]], **{
                k: v for k, v in schema.items() if k != "$ref"}}  # fmt: skip
            continue
        options = [o for o in schema.get("anyOf", ()) if o.get("type") != "null"]
        if "anyOf" in schema and len(options) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            schema = {**options[0], **rest}
            continue
        return schema


def _compare(model: Schema, crd: Schema, defs: dict[str, Schema], where: str) -> list[str]:
    model = _resolve(model, defs)
    problems: list[str] = []
    m_type = model.get("type")
    c_type = crd.get("type")
    if m_type is None and "const" in model:
        m_type = "string"
    if m_type == "integer" and c_type == "number":
        pass  # a model int fits a CRD number
    elif m_type != c_type:
        problems.append(f"{where}: type {m_type} in the model, {c_type} in the CRD")
        return problems
    if set(model.get("enum", ())) != set(crd.get("enum", ())):
        problems.append(f"{where}: enum {model.get('enum')} vs {crd.get('enum')}")
    for bound in ("minimum", "maximum", "minLength", "maxLength"):
        if bound in model and model[bound] != crd.get(bound):
            problems.append(f"{where}: {bound} {model[bound]} in the model, {crd.get(bound)}")
    if "default" in crd and "default" in model and model["default"] != crd["default"]:
        problems.append(f"{where}: default {model['default']!r} vs {crd['default']!r}")
    if m_type == "array":
        problems += _compare(model.get("items", {}), crd.get("items", {}), defs, f"{where}[]")
    if m_type == "object":
        m_props: dict[str, Schema] = model.get("properties", {})
        c_props: dict[str, Schema] = crd.get("properties", {})
        if not m_props and "additionalProperties" in model:
            return problems  # a string map
        for name in sorted(set(m_props) | set(c_props)):
            path = f"{where}.{name}"
            if name not in c_props:
                if path not in MODEL_ONLY:
                    problems.append(f"{path}: in the model, not declared in the CRD")
                continue
            if name not in m_props:
                if path not in CRD_ONLY:
                    problems.append(f"{path}: declared in the CRD, unknown to the model")
                continue
            problems += _compare(m_props[name], c_props[name], defs, path)
        # The apiserver must refuse what the model cannot read.
        for name in sorted(set(model.get("required", ())) - set(crd.get("required", ()))):
            problems.append(f"{where}.{name}: required by the model, optional in the CRD")
    return problems


@pytest.mark.parametrize(
    ("model", "kind", "path"), PAIRS, ids=[f"{m.__name__}@{k}.{p}" for m, k, p in PAIRS]
)
def test_model_and_crd_agree(model: type[BaseModel], kind: str, path: str) -> None:
    schema = model.model_json_schema(by_alias=True)
    problems = _compare(schema, _at(_crd_schema(kind), path), schema.get("$defs", {}), path)
    assert problems == []


@pytest.mark.parametrize("kind", ["TraceSession", "GpuTelemetry"])
def test_status_head_and_crd_agree(kind: str) -> None:
    """SessionStatusHead is the scalar part of a session's status (the rest has its own
    models, above): each of its fields agrees with the CRD's, the phase enum included."""
    schema = SessionStatusHead.model_json_schema(by_alias=True)
    status = _at(_crd_schema(kind), "status")
    head = {**status, "properties": {
        k: v for k, v in status["properties"].items() if k in schema["properties"]}}  # fmt: skip
    assert set(head["properties"]) == set(schema["properties"])
    assert _compare(schema, head, schema.get("$defs", {}), "status") == []


def test_the_comparison_catches_a_drifted_default() -> None:
    """The check can fail: a default that differs (the old alertOn bug) is reported."""
    schema = TraceSessionSpec.model_json_schema(by_alias=True)
    crd = _at(_crd_schema("TraceSession"), "spec")
    syscalls = crd["properties"]["probes"]["properties"]["syscalls"]["properties"]
    drifted = {**syscalls["alertOn"], "default": []}
    patched = {**crd, "properties": {**crd["properties"], "probes": {
        **crd["properties"]["probes"], "properties": {
            **crd["properties"]["probes"]["properties"], "syscalls": {
                **crd["properties"]["probes"]["properties"]["syscalls"],
                "properties": {**syscalls, "alertOn": drifted}}}}}}  # fmt: skip
    problems = _compare(schema, patched, schema["$defs"], "spec")
    assert any("alertOn: default" in p for p in problems), problems
