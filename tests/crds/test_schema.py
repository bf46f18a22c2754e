"""Offline checks of the CRD files: generated from gen_crds.py, copied into the
chart byte for byte, bounded, structural, and complete for the contracts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orb8_dev import gen_crds
from tests.crds import manifests

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
CHART_CRD_DIR = REPO / "charts" / "orb8" / "crds"
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert len(docs) == 1, f"{path}: one document per file"
    doc: dict[str, Any] = docs[0]
    return doc


CRDS = {path.name: load(path) for path in sorted(CRD_DIR.glob("*.yaml"))}


def schema_of(kind: str) -> dict[str, Any]:
    for crd in CRDS.values():
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(kind)


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


def test_crd_files_are_generated_from_gen_crds() -> None:
    assert set(CRDS) == set(gen_crds.all_crds())
    for name, text in gen_crds.rendered().items():
        assert (CRD_DIR / name).read_text(encoding="utf-8") == text, (
            f"crds/{name} is stale: run `make crds`"
        )


def test_chart_carries_identical_crds() -> None:
    ours = sorted(path.name for path in CRD_DIR.glob("*"))
    chart = sorted(path.name for path in CHART_CRD_DIR.glob("*"))
    assert ours == chart, "run `make sync-crds`"
    for name in ours:
        assert (CRD_DIR / name).read_bytes() == (CHART_CRD_DIR / name).read_bytes(), name


def test_chart_metadata() -> None:
    chart = load(REPO / "charts" / "orb8" / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "orb8"
    assert chart["version"] == "0.1.0"
    assert str(chart["appVersion"]) == "0.1.0"
    assert (REPO / "charts" / "orb8" / "templates" / "NOTES.txt").is_file()


@pytest.mark.parametrize(
    ("name", "kind", "plural", "short", "scope"),
    [
        ("tracesessions.yaml", "TraceSession", "tracesessions", "ts", "Namespaced"),
        ("gputelemetries.yaml", "GpuTelemetry", "gputelemetries", "gput", "Namespaced"),
        ("nodeagentconfigs.yaml", "NodeAgentConfig", "nodeagentconfigs", "nac", "Cluster"),
    ],
)
def test_names_and_versions(name: str, kind: str, plural: str, short: str, scope: str) -> None:
    crd = CRDS[name]
    assert crd["metadata"]["name"] == f"{plural}.orb8.io"
    spec = crd["spec"]
    assert spec["group"] == "orb8.io"
    assert spec["scope"] == scope
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["orb8"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schema_is_structural_and_bounded(name: str) -> None:
    schema = CRDS[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    problems = []
    for path, node in walk(schema):
        kind = node.get("type")
        if kind is None:
            problems.append(f"{path}: no type")
        if "x-kubernetes-preserve-unknown-fields" in node or "x-kubernetes-int-or-string" in node:
            problems.append(f"{path}: open-ended schema")
        if path in (".apiVersion", ".kind", ".metadata"):
            continue
        if not node.get("description"):
            problems.append(f"{path}: no description")
        if kind == "string" and "enum" not in node and "maxLength" not in node:
            problems.append(f"{path}: string without maxLength")
        if kind == "array":
            if "maxItems" not in node:
                problems.append(f"{path}: array without maxItems")
            list_type = node.get("x-kubernetes-list-type")
            if list_type not in ("atomic", "set", "map"):
                problems.append(f"{path}: no x-kubernetes-list-type")
            if list_type == "map":
                keys = node.get("x-kubernetes-list-map-keys", [])
                missing = set(keys) - set(node["items"].get("required", []))
                if not keys or missing:
                    problems.append(f"{path}: list-map keys {keys} not all required")
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
        if kind == "integer" and node.get("format") not in ("int32", "int64"):
            problems.append(f"{path}: integer without int32/int64 format")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", ["TraceSession", "GpuTelemetry", "NodeAgentConfig"])
def test_conditions_are_metav1_conditions(kind: str) -> None:
    conditions = schema_of(kind)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert item["properties"]["observedGeneration"]["format"] == "int64"


@pytest.mark.parametrize("kind", ["TraceSession", "GpuTelemetry"])
def test_status_nodes_is_an_atomic_list_of_named_nodes(kind: str) -> None:
    nodes = schema_of(kind)["properties"]["status"]["properties"]["nodes"]
    assert nodes["x-kubernetes-list-type"] == "atomic"
    assert "x-kubernetes-list-map-keys" not in nodes
    assert nodes["items"]["required"] == ["node"]


def test_node_agent_config_sessions_is_an_atomic_list() -> None:
    sessions = schema_of("NodeAgentConfig")["properties"]["spec"]["properties"]["sessions"]
    assert sessions["x-kubernetes-list-type"] == "atomic"
    assert sessions["items"]["required"][0] == "uid"


def test_counters_are_int64_and_readings_are_numbers() -> None:
    ts_status = schema_of("TraceSession")["properties"]["status"]["properties"]
    flow = ts_status["flows"]["items"]["properties"]
    assert flow["bytes"]["format"] == flow["packets"]["format"] == "int64"
    assert ts_status["summary"]["properties"]["bytes"]["format"] == "int64"
    gpu_status = schema_of("GpuTelemetry")["properties"]["status"]["properties"]
    gpu = gpu_status["pods"]["items"]["properties"]["gpus"]["items"]["properties"]
    for field in ("utilizationPercent", "temperatureCelsius", "powerWatts"):
        assert gpu[field]["type"] == "number", field
    assert gpu_status["summary"]["properties"]["avgUtilization"]["type"] == "number"
    assert gpu_status["alerts"]["items"]["properties"]["value"]["type"] == "number"


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Paths in ``value`` the schema does not declare: what the apiserver would prune."""
    if path == ".metadata":
        return []
    if isinstance(value, dict):
        if "additionalProperties" in schema:
            return [
                p
                for key, sub in value.items()
                for p in unknown_fields(schema["additionalProperties"], sub, f"{path}.{key}")
            ]
        props = schema.get("properties", {})
        found = []
        for key, sub in value.items():
            if key not in props:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(props[key], sub, f"{path}.{key}")
        return found
    if isinstance(value, list):
        return [
            p
            for i, sub in enumerate(value)
            for p in unknown_fields(schema["items"], sub, f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("TraceSession", {"status": manifests.trace_session_status()}),
        ("GpuTelemetry", {"status": manifests.gpu_telemetry_status()}),
        ("NodeAgentConfig", manifests.node_agent_config("node-a")),
        ("NodeAgentConfig", {"status": manifests.node_agent_config_status()}),
    ],
    ids=["trace-session-status", "gpu-telemetry-status", "nac-spec", "nac-status"],
)
def test_contract_objects_have_no_undeclared_fields(kind: str, obj: dict[str, Any]) -> None:
    assert unknown_fields(schema_of(kind), obj) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_examples_only_use_declared_fields(path: Path) -> None:
    example = load(path)
    assert example["apiVersion"] == "orb8.io/v1alpha1"
    assert example["metadata"]["namespace"]
    assert unknown_fields(schema_of(example["kind"]), example) == []


def test_generator_check_mode_agrees() -> None:
    assert gen_crds.main(["--check"]) == 0
