"""Malformed TraceSession and GpuTelemetry bodies against the real apiserver.

orb8_dev.specfuzz breaks a full, valid spec one field at a time, for every
field the CRD declares; RULE_BREAKS adds the breaks of the CRDs' cross-field
rules, which no single field shows. Each kind gets at least 200 distinct
malformed bodies of its own. Each body goes to the apiserver as a server-side dry
run (all validation and admission, nothing stored) with strict field
validation, as kubectl sends it. Each must be either refused with the broken
field's path in the message, or accepted and then read by orb8's own parser
(orb8_common.models) as valid: admission and the operator agree.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from orb8_common.errors import InvalidSpecError
from orb8_common.models import parse_gpu_telemetry_spec, parse_trace_session_spec
from orb8_dev.specfuzz import Mutation, is_malformed, mutations
from tests.crds.conftest import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]

KINDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "TraceSession": ("tracesessions", parse_trace_session_spec),
    "GpuTelemetry": ("gputelemetries", parse_gpu_telemetry_spec),
}
BASES = {
    "TraceSession": {
        "selector": {
            "podSelector": {
                "matchLabels": {"app": "shop"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["canary"]}],
            },
            "namespaces": ["shop"],
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
        },
        "probes": {
            "network": {
                "enabled": True,
                "directions": ["ingress", "egress"],
                "protocols": ["TCP", "UDP"],
                "topFlows": 100,
                "filter": {"ports": [80, 443], "cidrs": ["10.0.0.0/8", "fd00::/64"]},
            },
            "syscalls": {
                "enabled": True,
                "alertOn": ["ptrace", "mount"],
                "learningPeriod": "2m",
                "maxAlerts": 200,
            },
        },
        "duration": "1h30m",
        "reportInterval": "10s",
        "ttlSecondsAfterFinished": 86400,
    },
    "GpuTelemetry": {
        "selector": {
            "podSelector": {
                "matchLabels": {"app": "trainer"},
                "matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["batch"]}],
            },
            "namespaces": ["ml"],
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
        },
        "source": {"dcgmExporter": {"port": 9400, "path": "/metrics"}},
        "interval": "30s",
        "duration": "2h",
        "ttlSecondsAfterFinished": 600,
        "alerts": {"idleUtilizationPercent": 5, "idleFor": "15m", "memoryUsedPercent": 90},
    },
}


def _with(kind: str, path: list[str], value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(BASES[kind])
    node: Any = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return spec


def _rule_breaks() -> list[tuple[str, Mutation]]:
    """Bodies that break a CRD rule over several fields (x-kubernetes-validations)."""
    expressions = ["selector", "podSelector", "matchExpressions"]
    where = "spec.selector.podSelector.matchExpressions[0].values"
    out = []
    for kind in KINDS:
        for how, requirement in (
            ("Exists with values", {"key": "k", "operator": "Exists", "values": ["v"]}),
            ("DoesNotExist with values", {"key": "k", "operator": "DoesNotExist", "values": ["v"]}),
            ("In without values", {"key": "k", "operator": "In"}),
            ("NotIn with no values", {"key": "k", "operator": "NotIn", "values": []}),
        ):
            out.append((kind, Mutation(where, how, _with(kind, expressions, [requirement]))))
    gpu = "GpuTelemetry"
    for path, how, source in (
        ("spec.source", "both sources set", {"dcgmExporter": {"port": 9400}, "nvml": {}}),
        ("spec.source", "both sources, empty", {"dcgmExporter": {}, "nvml": {}}),
        ("spec.source.nvml.bogusField", "unknown field in nvml", {"nvml": {"bogusField": 1}}),
        ("spec.source.dcgmExporter.bogusField", "unknown field beside defaults",
         {"dcgmExporter": {"bogusField": "x"}}),
    ):  # fmt: skip
        out.append((gpu, Mutation(path, how, _with(gpu, ["source"], source))))
    trace = "TraceSession"
    off = {"network": {"enabled": False}, "syscalls": {"enabled": False}}
    out += [
        (trace, Mutation("spec.probes", "every probe disabled", _with(trace, ["probes"], off))),
        (trace, Mutation("spec.probes", "no probe at all", _with(trace, ["probes"], {}))),
    ]
    return out


RULE_BREAKS = _rule_breaks()


def spec_schema(kind: str) -> dict[str, Any]:
    plural = KINDS[kind][0]
    crd = yaml.safe_load((ROOT / "crds" / f"{plural}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def cases() -> list[tuple[str, Mutation]]:
    generated = [
        (kind, m) for kind in KINDS for m in mutations(schema=spec_schema(kind), base=BASES[kind])
    ]
    return [*generated, *RULE_BREAKS]


def _names_field(message: str, path: str) -> bool:
    # The apiserver names the field itself, or for a rule on the enclosing
    # object (e.g. "enable at least one probe") that object.
    parent = path.rsplit(".", 1)[0] if not path.endswith("]") else path.rsplit("[", 1)[0]
    return path in message or (parent != "spec" and parent in message)


def test_at_least_two_hundred_malformed_bodies_per_kind() -> None:
    all_cases = cases()
    # Distinct: no two cases break the same field the same way, nor send the same body.
    assert len({(k, m.path, m.how) for k, m in all_cases}) == len(all_cases)
    bodies = {(k, json.dumps(m.spec, sort_keys=True)) for k, m in all_cases}
    assert len(bodies) == len(all_cases)
    for kind in KINDS:
        malformed = [m for k, m in all_cases if k == kind and is_malformed(m)]
        assert len(malformed) >= 200, f"{kind}: only {len(malformed)} malformed bodies"


def test_every_malformed_body_is_refused_naming_the_field_or_parses(cluster: Cluster) -> None:
    plane = cluster.plane
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {plane.token}"
    session.verify = str(plane.ca_file)
    session.trust_env = False  # no proxy or CA bundle from the environment: loopback only
    accepted = refused = 0
    sent = dict.fromkeys(KINDS, 0)  # malformed bodies that reached the apiserver, per kind
    admitted: list[str] = []  # malformed by construction, admitted (and parsed: see below)
    problems: list[str] = []
    started = time.monotonic()
    bases = [(kind, Mutation("spec", "the valid base", BASES[kind])) for kind in KINDS]
    for n, (kind, mutation) in enumerate([*bases, *cases()]):
        plural, parse = KINDS[kind]
        body: dict[str, Any] = {
            "apiVersion": "orb8.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": f"fuzz-{n}", "namespace": cluster.namespace},
            "spec": mutation.spec,
        }
        url = (
            f"{plane.server}/apis/orb8.io/v1alpha1/namespaces/{cluster.namespace}/{plural}"
            "?dryRun=All&fieldValidation=Strict"
        )
        response = session.post(url, json=body, timeout=30)
        where = f"{kind} {mutation.path} ({mutation.how})"
        if mutation.how == "the valid base":
            assert response.status_code == 201, response.text
        elif is_malformed(mutation):
            sent[kind] += 1
        if response.status_code == 201:
            accepted += 1
            if is_malformed(mutation) and mutation.how != "the valid base":
                admitted.append(where)
            stored = response.json()["spec"]
            try:
                parse(stored)
            except InvalidSpecError as err:
                problems.append(f"{where}: admitted, but the operator refuses it: {err}")
            continue
        refused += 1
        message = response.json().get("message", "")
        if response.status_code >= 500:
            problems.append(f"{where}: server error {response.status_code}: {message}")
        elif not _names_field(message, mutation.path):
            problems.append(f"{where}: refused without naming the field: {message[:300]}")
    elapsed = time.monotonic() - started
    print(f"fuzz: {accepted + refused} bodies, {refused} refused, {accepted} accepted, "
          f"{elapsed:.1f}s; malformed sent: {sent}; admitted: {admitted}")  # fmt: skip
    assert all(n >= 200 for n in sent.values()), sent
    assert not problems, "\n".join(problems)
    assert refused > accepted  # nearly every break is a real error
