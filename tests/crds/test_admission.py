"""Malformed orb8 resources are refused by the real kube-apiserver at
``kubectl apply`` time, with the offending field's path in the message.

Every case starts from a manifest the apiserver accepts
(``test_base_manifests_are_accepted``) and breaks one thing, so each refusal
is caused by that one thing. The apiserver reports OpenAPI errors (pattern,
enum, minimum/maximum, required), CEL rule errors and strict field-validation
errors (unknown fields) each with the JSON path of the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crds.conftest import Cluster
from tests.crds.manifests import API_VERSION, gpu_telemetry, node_agent_config, trace_session

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "examples").glob("*.yaml"))


@dataclass(frozen=True)
class Case:
    id: str
    manifest: dict[str, Any]
    expect: tuple[str, ...]  # every fragment must appear in kubectl's error output


def ts(case_id: str, expect: tuple[str, ...], **spec: Any) -> Case:
    return Case(case_id, trace_session(f"bad-{case_id}", **spec), expect)


def gput(case_id: str, expect: tuple[str, ...], **spec: Any) -> Case:
    return Case(case_id, gpu_telemetry(f"bad-{case_id}", **spec), expect)


NET = {"enabled": True}
SELECTOR = {"podSelector": {"matchLabels": {"app": "checkout"}}}


def expr(**requirement: Any) -> dict[str, Any]:
    return {"podSelector": {"matchExpressions": [requirement]}}


def sys_probe(**fields: Any) -> dict[str, Any]:
    return {"syscalls": {"enabled": True, **fields}}


def net_filter(**fields: Any) -> dict[str, Any]:
    return {"network": {"enabled": True, "filter": fields}}


FILTER = "spec.probes.network.filter"


CASES = [
    # durations: pattern first, then CEL's duration() for the value
    ts("negative-duration", ("spec.duration", "should match"), duration="-5m"),
    ts("unparsable-duration", ("spec.duration", "should match"), duration="ten minutes"),
    ts("zero-duration", ("spec.duration", "must be greater than 0, got 0s"), duration="0s"),
    ts(
        "overflowing-duration",
        ("spec.duration", "must be at most 8760h, got 99999999999999h"),
        duration="99999999999999h",
    ),
    ts(
        "int64-overflowing-duration",
        ("spec.duration", "must be at most 8760h, got 2562047h48m"),
        duration="2562047h48m",
    ),
    ts(
        "many-part-overflowing-duration",
        ("spec.duration", "must be at most 8760h"),
        duration="99999h99999h99999h99999h99999h",
    ),
    ts(
        "duration-over-a-year",
        ("spec.duration", "must be at most 8760h, got 8761h"),
        duration="8761h",
    ),
    ts(
        "report-interval-over-a-year",
        ("spec.reportInterval", "must be at most 8760h"),
        reportInterval="9000h",
    ),
    ts(
        "ttl-over-int32",
        ("spec.ttlSecondsAfterFinished", "less than or equal to 2147483647"),
        ttlSecondsAfterFinished=3_000_000_000,
    ),
    ts("zero-duration-compound", ("spec.duration", "must be greater than 0"), duration="0h0m0s"),
    ts(
        "report-interval-below-1s",
        ("spec.reportInterval", "must be at least 1s, got 500ms"),
        reportInterval="500ms",
    ),
    ts(
        "negative-learning-period",
        ("spec.probes.syscalls.learningPeriod", "should match"),
        probes=sys_probe(learningPeriod="-1m"),
    ),
    ts(
        "learning-period-too-long",
        ("spec.probes.syscalls.learningPeriod", "8760h"),
        probes=sys_probe(learningPeriod="9000h"),
    ),
    ts(
        "spike-factor-below-two",
        ("spec.probes.syscalls.baseline.spikeFactor", "should be greater than or equal to 2"),
        probes=sys_probe(learningPeriod="5m", baseline={"spikeFactor": 1}),
    ),
    ts(
        "spike-min-count-zero",
        ("spec.probes.syscalls.baseline.spikeMinCount", "should be greater than or equal to 1"),
        probes=sys_probe(learningPeriod="5m", baseline={"spikeMinCount": 0}),
    ),
    # probes
    ts(
        "unknown-probe",
        ('unknown field "spec.probes.http"',),
        probes={"network": NET, "http": {"enabled": True}},
    ),
    ts(
        "unknown-probe-field",
        ('unknown field "spec.probes.network.sampleRate"',),
        probes={"network": {"enabled": True, "sampleRate": 10}},
    ),
    ts("unknown-spec-field", ('unknown field "spec.durration"',), durration="10m"),
    # flow filters: ports, then CIDRs (pattern first, then CEL's isCIDR and canonical form)
    ts(
        "filter-port-zero",
        (f"{FILTER}.ports[0]", "greater than or equal to 1"),
        probes=net_filter(ports=[0]),
    ),
    ts(
        "filter-port-over-65535",
        (f"{FILTER}.ports[1]", "less than or equal to 65535"),
        probes=net_filter(ports=[53, 65536]),
    ),
    ts(
        "filter-port-repeated",
        (f"{FILTER}.ports[1]", "Duplicate value"),
        probes=net_filter(ports=[80, 80]),
    ),
    ts(
        "filter-too-many-ports",
        (f"{FILTER}.ports", "must have at most 16 items"),
        probes=net_filter(ports=list(range(1, 18))),
    ),
    ts(
        "filter-cidr-without-length",
        (f"{FILTER}.cidrs[0]", "should match"),
        probes=net_filter(cidrs=["10.0.0.0"]),
    ),
    ts(
        "filter-cidr-uppercase",
        (f"{FILTER}.cidrs[0]", "should match"),
        probes=net_filter(cidrs=["FD00::/8"]),
    ),
    ts(
        "filter-cidr-ipv4-mapped",
        (f"{FILTER}.cidrs[0]", "should match"),
        probes=net_filter(cidrs=["::ffff:10.0.0.0/104"]),
    ),
    ts(
        "filter-cidr-prefix-too-long",
        (f"{FILTER}.cidrs[1]", "must be an IPv4 or IPv6 CIDR such as 10.0.0.0/8"),
        probes=net_filter(cidrs=["10.0.0.0/8", "10.0.0.0/33"]),
    ),
    ts(
        "filter-cidr-bad-address",
        (f"{FILTER}.cidrs[0]", "must be an IPv4 or IPv6 CIDR"),
        probes=net_filter(cidrs=["10.0.0.256/32"]),
    ),
    ts(
        "filter-cidr-host-bits",
        (f"{FILTER}.cidrs[0]", "must be written in canonical form"),
        probes=net_filter(cidrs=["10.1.2.3/8"]),
    ),
    ts(
        "filter-cidr-not-compressed",
        (f"{FILTER}.cidrs[0]", "must be written in canonical form"),
        probes=net_filter(cidrs=["fd00:0:0:0::/64"]),
    ),
    ts(
        "filter-cidr-repeated",
        (f"{FILTER}.cidrs[1]", "Duplicate value"),
        probes=net_filter(cidrs=["fd00::/8", "fd00::/8"]),
    ),
    ts(
        "filter-too-many-cidrs",
        (f"{FILTER}.cidrs", "must have at most 16 items"),
        probes=net_filter(cidrs=[f"10.{i}.0.0/16" for i in range(17)]),
    ),
    ts(
        "unknown-protocol",
        ("spec.probes.network.protocols[1]", "Unsupported value", '"SCTP"'),
        probes={"network": {"enabled": True, "protocols": ["TCP", "SCTP"]}},
    ),
    ts(
        "duplicate-protocol",
        ("spec.probes.network.protocols[1]", "Duplicate value"),
        probes={"network": {"enabled": True, "protocols": ["TCP", "TCP"]}},
    ),
    ts(
        "unknown-direction",
        ("spec.probes.network.directions[0]", "Unsupported value"),
        probes={"network": {"enabled": True, "directions": ["sideways"]}},
    ),
    ts(
        "top-flows-zero",
        ("spec.probes.network.topFlows", "greater than or equal to 1"),
        probes={"network": {"enabled": True, "topFlows": 0}},
    ),
    ts(
        "top-flows-5000",
        ("spec.probes.network.topFlows", "less than or equal to 1000"),
        probes={"network": {"enabled": True, "topFlows": 5000}},
    ),
    ts(
        "dns-top-names-over-200",
        ("spec.probes.dns.topNames", "less than or equal to 200"),
        probes={"dns": {"enabled": True, "topNames": 201}},
    ),
    ts(
        "max-alerts-zero",
        ("spec.probes.syscalls.maxAlerts", "greater than or equal to 1"),
        probes=sys_probe(maxAlerts=0),
    ),
    ts(
        "max-alerts-too-many",
        ("spec.probes.syscalls.maxAlerts", "less than or equal to 1000"),
        probes=sys_probe(maxAlerts=1001),
    ),
    ts(
        "bad-syscall-name",
        ("spec.probes.syscalls.alertOn[1]", "should match"),
        probes=sys_probe(alertOn=["ptrace", "PTRACE"]),
    ),
    ts(
        "unknown-syscall",
        ("spec.probes.syscalls.alertOn[0]", "unknown syscall notasyscall"),
        probes=sys_probe(alertOn=["notasyscall", "ptrace"]),
    ),
    ts(
        "empty-alert-list",
        ("spec.probes.syscalls.alertOn", "should have at least 1 items"),
        probes=sys_probe(alertOn=[]),
    ),
    ts(
        "no-probe-enabled",
        ("spec.probes", "at least one of network, syscalls or dns must be enabled"),
        probes={"network": {"enabled": False}, "syscalls": {"enabled": False}},
    ),
    ts(
        "no-probes-at-all",
        ("spec.probes", "at least one of network, syscalls or dns must be enabled"),
        probes={},
    ),
    # selector
    ts(
        "invalid-selector-operator",
        ("spec.selector.podSelector.matchExpressions[0].operator", "Unsupported value", '"Equals"'),
        selector=expr(key="app", operator="Equals", values=["web"]),
    ),
    ts(
        "in-without-values",
        ("spec.selector.podSelector.matchExpressions[0].values", "must be non-empty"),
        selector=expr(key="app", operator="In"),
    ),
    ts(
        "notin-with-empty-values",
        ("spec.selector.podSelector.matchExpressions[0].values", "must be non-empty"),
        selector=expr(key="app", operator="NotIn", values=[]),
    ),
    ts(
        "exists-with-values",
        ("spec.selector.podSelector.matchExpressions[0].values", "must be empty"),
        selector=expr(key="app", operator="Exists", values=["web"]),
    ),
    ts(
        "bad-label-key",
        ("spec.selector.podSelector.matchExpressions[0].key", "should match"),
        selector=expr(key="-app", operator="Exists"),
    ),
    ts(
        "bad-match-labels-key",
        ("spec.selector.podSelector.matchLabels", "must be a label key"),
        selector={"podSelector": {"matchLabels": {"bad key!": "web"}}},
    ),
    ts(
        "bad-namespace-name",
        ("spec.selector.namespaces[0]", "should match"),
        selector={**SELECTOR, "namespaces": ["Shop_Prod"]},
    ),
    ts(
        "bad-node-selector-value",
        ("spec.selector.nodeSelector.zone", "should match"),
        selector={**SELECTOR, "nodeSelector": {"zone": "eu west"}},
    ),
    ts("missing-pod-selector", ("spec.selector.podSelector", "Required value"), selector={}),
    ts(
        "negative-ttl",
        ("spec.ttlSecondsAfterFinished", "greater than or equal to 0"),
        ttlSecondsAfterFinished=-1,
    ),
    Case(
        "empty-spec",
        {
            "apiVersion": API_VERSION,
            "kind": "TraceSession",
            "metadata": {"name": "bad-empty-spec"},
            "spec": {},
        },
        ("spec.selector: Required value", "spec.probes: Required value"),
    ),
    Case(
        "missing-spec",
        {"apiVersion": API_VERSION, "kind": "TraceSession", "metadata": {"name": "bad-no-spec"}},
        ("spec: Required value",),
    ),
    # GpuTelemetry
    gput(
        "both-sources",
        ("spec.source", "at most one of dcgmExporter or nvml"),
        source={"dcgmExporter": {}, "nvml": {}},
    ),
    gput("unknown-source", ('unknown field "spec.source.rocm"',), source={"rocm": {}}),
    gput(
        "port-out-of-range",
        ("spec.source.dcgmExporter.port", "less than or equal to 65535"),
        source={"dcgmExporter": {"port": 70000}},
    ),
    gput(
        "port-zero",
        ("spec.source.dcgmExporter.port", "greater than or equal to 1"),
        source={"dcgmExporter": {"port": 0}},
    ),
    gput(
        "relative-metrics-path",
        ("spec.source.dcgmExporter.path", "should match"),
        source={"dcgmExporter": {"path": "metrics"}},
    ),
    gput(
        "idle-utilization-over-100",
        ("spec.alerts.idleUtilizationPercent", "less than or equal to 100"),
        alerts={"idleUtilizationPercent": 101},
    ),
    gput(
        "memory-percent-negative",
        ("spec.alerts.memoryUsedPercent", "greater than or equal to 0"),
        alerts={"memoryUsedPercent": -1},
    ),
    gput(
        "zero-idle-for",
        ("spec.alerts.idleFor", "must be greater than 0"),
        alerts={"idleUtilizationPercent": 5, "idleFor": "0m"},
    ),
    gput(
        "gpu-ttl-over-int32",
        ("spec.ttlSecondsAfterFinished", "less than or equal to 2147483647"),
        ttlSecondsAfterFinished=2**31,
    ),
    gput(
        "idle-for-over-a-year",
        ("spec.alerts.idleFor", "must be at most 8760h"),
        alerts={"idleFor": "8761h"},
    ),
    gput("interval-below-1s", ("spec.interval", "must be at least 1s"), interval="999ms"),
    gput("gpu-bad-duration", ("spec.duration", "should match"), duration="1d"),
    Case(
        "gpu-missing-selector",
        {
            "apiVersion": API_VERSION,
            "kind": "GpuTelemetry",
            "metadata": {"name": "bad-gpu-nosel"},
            "spec": {"source": {"nvml": {}}},
        },
        ("spec.selector: Required value",),
    ),
]

NAC_CASES = [
    ("nac-name-mismatch", {"nodeName": "node-b"}, ("spec.nodeName", "must equal metadata.name")),
    (
        "nac-bad-session-kind",
        {"sessions": [{"uid": "u1", "kind": "Pod", "namespace": "a", "name": "b"}]},
        ("spec.sessions[0].kind", "Unsupported value"),
    ),
    (
        "nac-session-without-uid",
        {"sessions": [{"kind": "TraceSession", "namespace": "a", "name": "b"}]},
        ("spec.sessions[0].uid", "Required value"),
    ),
]


def test_at_least_fifteen_distinct_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids) >= 15
    rendered = {yaml.safe_dump(case.manifest.get("spec", {})) for case in CASES}
    assert len(rendered) >= 15


def test_base_manifests_are_accepted(cluster: Cluster) -> None:
    """The starting points of the cases are valid; each case breaks exactly one thing."""
    for manifest in (trace_session("good-base"), gpu_telemetry("good-base")):
        result = cluster.apply(manifest)
        assert result.returncode == 0, result.stderr
    nac = node_agent_config(f"{cluster.namespace}-good")
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nac), check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_manifest_is_refused(cluster: Cluster, case: Case) -> None:
    result = cluster.apply(case.manifest)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for fragment in case.expect:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"
    # A refusal is the rule's own message, never a CEL evaluation error.
    assert "type conversion error" not in result.stderr
    assert "evaluating rule" not in result.stderr
    assert not cluster.exists(case.manifest["kind"].lower(), case.manifest["metadata"]["name"])


@pytest.mark.parametrize(
    ("spec_change", "expect"),
    [(change, expect) for _, change, expect in NAC_CASES],
    ids=[case_id for case_id, _, _ in NAC_CASES],
)
def test_malformed_node_agent_config_is_refused(
    cluster: Cluster, spec_change: dict[str, Any], expect: tuple[str, ...]
) -> None:
    nac = node_agent_config(f"{cluster.namespace}-bad")
    nac["spec"].update(spec_change)
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(nac), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for fragment in expect:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_is_accepted(cluster: Cluster, path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    manifest["metadata"]["namespace"] = cluster.namespace
    result = cluster.apply(manifest)
    assert result.returncode == 0, result.stderr
    stored = cluster.get_json(manifest["kind"].lower(), manifest["metadata"]["name"])
    # Nothing the example sets is pruned or rewritten (defaults may be added).
    assert _contains(stored["spec"], manifest["spec"]), stored["spec"]


def test_examples_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {
        "tracesession-network.yaml",
        "tracesession-syscalls.yaml",
        "tracesession-baseline.yaml",
        "tracesession-full.yaml",
        "gputelemetry-dcgm.yaml",
        "gputelemetry-nvml.yaml",
    } <= names


def test_defaults_are_applied(cluster: Cluster) -> None:
    """What the operator reads back from a minimal TraceSession and GpuTelemetry."""
    minimal = trace_session(
        "defaults", probes={"network": {"enabled": True}, "syscalls": {"enabled": True}}
    )
    assert cluster.apply(minimal).returncode == 0
    spec = cluster.get_json("tracesession", "defaults")["spec"]
    assert spec["reportInterval"] == "15s"
    assert spec["probes"]["network"] == {
        "enabled": True,
        "directions": ["ingress", "egress"],
        "protocols": ["TCP", "UDP", "ICMP", "ICMPv6"],
        "topFlows": 50,
        "tcpHealth": True,
    }
    syscalls = spec["probes"]["syscalls"]
    assert syscalls["maxAlerts"] == 100
    assert syscalls["learningPeriod"] == "0s"
    assert {"ptrace", "mount", "bpf", "setns", "userfaultfd", "keyctl"} <= set(syscalls["alertOn"])
    assert len(syscalls["alertOn"]) == 20
    assert "duration" not in spec and "ttlSecondsAfterFinished" not in spec

    learning = trace_session(
        "baseline-defaults", probes={"syscalls": {"enabled": True, "learningPeriod": "5m",
                                                  "baseline": {}}},
    )  # fmt: skip
    assert cluster.apply(learning).returncode == 0
    stored = cluster.get_json("tracesession", "baseline-defaults")["spec"]["probes"]["syscalls"]
    assert stored["baseline"] == {"spikeFactor": 10, "spikeMinCount": 1000}
    dns_only = trace_session("dns-only", probes={"dns": {"enabled": True}})
    assert cluster.apply(dns_only).returncode == 0
    dspec = cluster.get_json("tracesession", "dns-only")["spec"]
    assert dspec["probes"]["dns"] == {"enabled": True, "topNames": 20}

    gpu = gpu_telemetry("defaults", source={"dcgmExporter": {}})
    assert cluster.apply(gpu).returncode == 0
    gspec = cluster.get_json("gputelemetry", "defaults")["spec"]
    assert gspec["interval"] == "15s"
    assert gspec["source"] == {"dcgmExporter": {"port": 9400, "path": "/metrics"}}


@pytest.mark.parametrize(
    "value", ["90s", "10m", "1h30m", "1.5h", "250ms", "100us", "100µs", "2h45m30.5s"]
)
def test_go_durations_are_accepted(cluster: Cluster, value: str) -> None:
    name = "dur-" + "".join(ch if ch.isalnum() else "-" for ch in value.replace("µ", "micro"))
    result = cluster.apply(trace_session(name, duration=value))
    assert result.returncode == 0, result.stderr


def test_every_known_syscall_and_longest_values_are_accepted(cluster: Cluster) -> None:
    """The admission rule and the model share one list (orb8_common.syscalls)."""
    from orb8_common.syscalls import KNOWN_SYSCALLS

    manifest = trace_session(
        "all-syscalls",
        probes={"syscalls": {"enabled": True, "alertOn": list(KNOWN_SYSCALLS)}},
        duration="8760h",
        ttlSecondsAfterFinished=2**31 - 1,
    )
    result = cluster.apply(manifest)
    assert result.returncode == 0, result.stderr[:2000]
    stored = cluster.get_json("tracesession", "all-syscalls")["spec"]
    assert stored["probes"]["syscalls"]["alertOn"] == list(KNOWN_SYSCALLS)


def test_largest_flow_filter_is_accepted_and_read_back_alike(cluster: Cluster) -> None:
    """16 ports and 16 CIDRs of both families: admission and orb8's model agree."""
    from orb8_common.models import parse_trace_session_spec

    ports = [1, 53, 80, 443, 8080, 65535, *range(2000, 2010)]
    cidrs = [
        "0.0.0.0/0", "10.0.0.0/8", "10.96.0.0/12", "192.168.1.128/25", "203.0.113.7/32",
        "::/0", "fd00::/8", "2001:db8::/32", "2001:db8:0:1::/64", "fe80::/10",
        "2001:db8::1/128", "fd12:3456:789a:1::/64", "255.255.255.255/32",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "1:0:1:1:1:1:1:0/127", "172.16.0.0/12",
    ]  # fmt: skip
    assert len(ports) == len(cidrs) == 16
    manifest = trace_session("wide-filter", probes=net_filter(ports=ports, cidrs=cidrs))
    result = cluster.apply(manifest)
    assert result.returncode == 0, result.stderr
    stored = cluster.get_json("tracesession", "wide-filter")["spec"]
    assert stored["probes"]["network"]["filter"] == {"ports": ports, "cidrs": cidrs}
    spec = parse_trace_session_spec(stored)
    assert spec.probes.network.filter.ports == tuple(ports)
    assert spec.probes.network.filter.cidrs == tuple(cidrs)


def test_unknown_fields_are_pruned_without_strict_validation(cluster: Cluster) -> None:
    """Only strict field validation refuses unknown fields; a client that turns it
    off (``--validate=false``) gets them silently dropped by structural pruning.
    kubectl's default (--validate=strict) refuses them."""
    manifest = trace_session("lenient", probes={"network": NET, "http": {"enabled": True}})
    result = cluster.apply(manifest, "--validate=false")
    assert result.returncode == 0, result.stderr
    assert "http" not in cluster.get_json("tracesession", "lenient")["spec"]["probes"]


def _contains(actual: Any, expected: Any) -> bool:
    """``expected`` is a sub-tree of ``actual`` (maps may have more keys)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected)
