"""The agent's /metrics text: names, labels, the per-pod cap, and health semantics.

Every assertion reads the exposition text the agent serves, parsed back with
prometheus_client's own parser.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration, CustomObjectsApi
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orb8_agent.control.agent import NodeAgent
from orb8_agent.control.gpu_sessions import GpuSessions
from orb8_agent.dataplane.flowfilter import InterfaceFilter
from orb8_agent.dataplane.models import Alert, Flow, SyscallCount, TcpHealth
from orb8_agent.dataplane.probes import ProbeSet
from orb8_agent.metrics import build_registry
from orb8_agent.podmetrics import ACTIVE_WINDOW_S, OTHER, PodMetrics
from orb8_agent.runner import READY_SYNC_AGE_S, TICK_STALL_S, AgentRunner
from orb8_common.watchstate import WatchState

# Every label name the agent may use; an IP, port, pid or flow label is a defect.
ALLOWED_LABELS = {
    "namespace", "pod", "direction", "protocol", "syscall", "probe", "map", "reason",
    "watch", "target", "result", "group", "gpu", "source", "state",
    "le",  # the connect latency histogram's fixed buckets
}  # fmt: skip
FORBIDDEN_LABELS = {"ip", "src", "dst", "src_ip", "dst_ip", "port", "sport", "dport", "pid",
                    "tgid", "comm", "flow", "container_id", "cgroup", "ifindex"}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class IdleDataPlane:
    """A data plane with no probe loaded (the tests feed the counters directly)."""

    def loaded_probes(self) -> frozenset[str]:
        return frozenset()

    def probe_errors(self) -> Mapping[str, str]:
        return {}

    def attach_interface(self, *, ifname: str) -> None: ...
    def detach_interface(self, *, ifname: str) -> None: ...
    def set_flow_filters(self, *, filters: Mapping[int, InterfaceFilter]) -> Mapping[int, str]:
        return {}

    def attach_cgroup(self, *, path: Path) -> int:
        return 0

    def detach_cgroup(self, *, path: Path) -> None: ...
    def set_watched_cgroups(self, *, cgroup_ids: Collection[int]) -> None: ...
    def set_alert_syscalls(self, *, names: Collection[str]) -> None: ...

    def read_flows(self) -> Sequence[Flow]:
        return []

    def poll_alerts(self) -> Sequence[Alert]:
        return []

    def read_counts(self) -> Sequence[SyscallCount]:
        return []

    def dropped_events(self) -> int:
        return 0

    def set_watched_netns(self, *, inodes: Collection[int]) -> None: ...

    def read_tcp_health(self) -> Sequence[TcpHealth]:
        return []


def _agent(tmp_path: Path, *, max_pods: int, clock: Clock) -> tuple[NodeAgent, CollectorRegistry]:
    agent = NodeAgent(
        node="node-a", dataplane=IdleDataPlane(), cgroup_root=tmp_path, clock=clock,
        pod_metrics=PodMetrics(max_pods=max_pods, clock=clock),
    )  # fmt: skip
    registry, _ = build_registry(agent=agent, probes=ProbeSet(), watches=[WatchState(name="w")])
    return agent, registry


def _samples(registry: CollectorRegistry) -> list[Sample]:
    text = generate_latest(registry).decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _by_name(samples: list[Sample], name: str) -> list[Sample]:
    return [s for s in samples if s.name == name]


def _flow(*, ifindex: int, n: int, nbytes: int, direction: str, proto: int = 6) -> Flow:
    src = f"10.{ifindex // 250}.{ifindex % 250}.{n % 250 + 1}"
    return Flow(src, "10.99.0.1", 30000 + n, 8080, proto, direction, ifindex, nbytes,
                max(1, nbytes // 1000), 0, 0, 0)  # fmt: skip


def _pods(count: int) -> dict[int, tuple[str, str]]:
    return {100 + i: (f"ns-{i % 20}", f"pod-{i}") for i in range(count)}


def _assert_clean_labels(samples: list[Sample], *, forbidden_values: Collection[str]) -> None:
    for sample in samples:
        names = set(sample.labels)
        assert names <= ALLOWED_LABELS, (sample.name, names)
        assert not names & FORBIDDEN_LABELS, sample
        for value in sample.labels.values():
            assert value not in forbidden_values, sample
            with pytest.raises(ValueError):
                ipaddress.ip_address(value)


def test_ten_thousand_flows_over_a_thousand_pods_give_a_bounded_series_count(
    tmp_path: Path,
) -> None:
    clock = Clock()
    agent, registry = _agent(tmp_path, max_pods=500, clock=clock)
    pods = _pods(1000)
    rng = random.Random(7)
    flows = []
    sent: dict[tuple[str, str], int] = {}
    for ifindex, pod in pods.items():
        for n in range(10):  # 10 flows per pod, both directions: 10,000 flows
            nbytes = rng.randrange(100, 1_000_000)
            flows.append(_flow(ifindex=ifindex, n=n, nbytes=nbytes,
                               direction="ingress" if n % 2 else "egress"))  # fmt: skip
            sent[pod] = sent.get(pod, 0) + nbytes
    agent.pod_metrics.add_flows(flows=flows, pod_of=pods)
    samples = _samples(registry)

    flow_bytes = _by_name(samples, "orb8_flow_bytes_total")
    labelled_pods = {(s.labels["namespace"], s.labels["pod"]) for s in flow_bytes}
    assert len(labelled_pods) == 501  # 500 pods of their own and _other
    assert (OTHER, OTHER) in labelled_pods
    # The biggest senders kept their series.
    biggest = sorted(sent, key=lambda k: -sent[k])[:500]
    assert labelled_pods - {(OTHER, OTHER)} == set(biggest)
    # Nothing lost by folding: the sum over series is every byte fed.
    assert sum(s.value for s in flow_bytes) == sum(f.bytes for f in flows)
    assert sum(s.value for s in _by_name(samples, "orb8_flow_packets_total")) == sum(
        f.packets for f in flows
    )
    active = _by_name(samples, "orb8_flows_active")
    assert sum(s.value for s in active) == 10_000
    assert len(active) == 501
    capped = _by_name(samples, "orb8_metrics_series_capped_total")
    assert [(s.labels, s.value) for s in capped] == [({"group": "traffic"}, 500.0)]
    assert _by_name(samples, "orb8_metrics_folded_pods")[0].value == 500
    per_pod = [s for s in samples if "pod" in s.labels]
    # 501 pod label values x (2 directions x bytes/packets + active flows)
    assert len(per_pod) == 501 * 5
    _assert_clean_labels(
        samples,
        forbidden_values={f.src_ip for f in flows} | {str(f.src_port) for f in flows},
    )


def test_the_cap_does_not_bite_below_the_limit(tmp_path: Path) -> None:
    agent, registry = _agent(tmp_path, max_pods=500, clock=Clock())
    pods = _pods(50)
    agent.pod_metrics.add_flows(
        flows=[_flow(ifindex=i, n=0, nbytes=1500, direction="ingress") for i in pods],
        pod_of=pods,
    )
    samples = _samples(registry)
    labelled = {s.labels["pod"] for s in _by_name(samples, "orb8_flow_bytes_total")}
    assert labelled == {pod for _, pod in pods.values()}
    assert _by_name(samples, "orb8_metrics_series_capped_total")[0].value == 0


def test_counters_never_decrease_as_pods_come_and_go(tmp_path: Path) -> None:
    clock = Clock()
    agent, registry = _agent(tmp_path, max_pods=2, clock=clock)
    pods = {1: ("shop", "a"), 2: ("shop", "b"), 3: ("shop", "c"), 4: ("shop", "d")}
    sizes = {1: 4000, 2: 3000, 3: 2000, 4: 1000}

    def feed() -> None:
        agent.pod_metrics.add_flows(
            flows=[_flow(ifindex=i, n=0, nbytes=sizes[i], direction="ingress") for i in pods],
            pod_of=pods,
        )

    def series() -> dict[str, float]:
        return {
            s.labels["pod"]: s.value for s in _by_name(_samples(registry), "orb8_flow_bytes_total")
        }

    feed()
    first = series()
    assert first == {"a": 4000, "b": 3000, OTHER: 3000}  # pod-relative egress, TCP
    # a stops being a target: its series goes, the biggest folded pod (c) takes the slot
    agent.pod_metrics.retain(present={("shop", "b"), ("shop", "c"), ("shop", "d")})
    del pods[1]
    feed()
    second = series()
    assert second == {"b": 6000, "c": 2000, OTHER: 4000}  # c starts at zero; _other keeps its own
    for pod in ("b", OTHER):
        assert second[pod] >= first[pod]
    assert _by_name(_samples(registry), "orb8_metrics_series_capped_total")[0].value == 2


def test_active_flows_age_out_and_alerts_count_per_pod_and_syscall(tmp_path: Path) -> None:
    clock = Clock()
    agent, registry = _agent(tmp_path, max_pods=1, clock=clock)
    pods = {1: ("shop", "a"), 2: ("shop", "b")}
    agent.pod_metrics.add_flows(
        flows=[_flow(ifindex=1, n=n, nbytes=100, direction="egress") for n in range(3)],
        pod_of=pods,
    )
    for _ in range(3):
        agent.pod_metrics.add_alert(pod=("shop", "a"), syscall="ptrace")
    agent.pod_metrics.add_alert(pod=("shop", "b"), syscall="mount")  # no slot left: _other
    samples = _samples(registry)
    assert {(s.labels["pod"], s.value) for s in _by_name(samples, "orb8_flows_active")} == {
        ("a", 3)
    }
    alerts = {
        (s.labels["namespace"], s.labels["pod"], s.labels["syscall"]): s.value
        for s in _by_name(samples, "orb8_syscall_alerts_total")
    }
    assert alerts == {("shop", "a", "ptrace"): 3, (OTHER, OTHER, "mount"): 1}
    agent.pod_metrics.add_baseline_alert(pod=("shop", "a"), reason="rate spike")
    agent.pod_metrics.add_baseline_alert(pod=("shop", "b"), reason="not seen during learning")
    baseline = {
        (s.labels["pod"], s.labels["reason"]): s.value
        for s in _by_name(_samples(registry), "orb8_syscall_baseline_alerts_total")
    }
    assert baseline == {("a", "rate spike"): 1, (OTHER, "not seen during learning"): 1}
    clock.now += ACTIVE_WINDOW_S + 1
    assert _by_name(_samples(registry), "orb8_flows_active") == []


def test_every_agent_family_is_exposed_with_orb8_names_and_units(tmp_path: Path) -> None:
    _, registry = _agent(tmp_path, max_pods=5, clock=Clock())
    text = generate_latest(registry).decode()
    families = {fam.name: fam.type for fam in text_string_to_metric_families(text)}
    expected = {
        "orb8_flow_bytes": "counter", "orb8_flow_packets": "counter",
        "orb8_flows_active": "gauge", "orb8_syscall_alerts": "counter",
        "orb8_metrics_series_capped": "counter", "orb8_metrics_folded_pods": "gauge",
        "orb8_active_sessions": "gauge", "orb8_pods_tracked": "gauge",
        "orb8_attached_interfaces": "gauge", "orb8_probes_loaded": "gauge",
        "orb8_map_full_errors": "counter", "orb8_flow_map_evictions": "counter",
        "orb8_flow_filtered_packets": "counter",
        "orb8_flow_filter_unapplied_pods": "gauge", "orb8_flow_filter_write_failures": "counter",
        "orb8_ringbuf_events": "counter", "orb8_ringbuf_dropped_events": "counter",
        "orb8_ringbuf_used_bytes": "gauge", "orb8_ringbuf_size_bytes": "gauge",
        "orb8_watch_connected": "gauge", "orb8_watch_reconnects": "counter",
        "orb8_watch_last_sync_timestamp_seconds": "gauge", "orb8_status_writes": "counter",
        "orb8_tcp_retransmits": "counter", "orb8_tcp_resets": "counter",
        "orb8_tcp_connects": "counter", "orb8_tcp_connect_latency_seconds": "histogram",
        "orb8_syscall_baseline_alerts": "counter", "orb8_syscall_baseline_containers": "gauge",
        "orb8_syscall_baseline_windows": "counter",
        "orb8_dns_queries": "counter", "orb8_dns_answers": "counter",
        "orb8_dns_latency_seconds": "summary", "orb8_dns_attached_interfaces": "gauge",
        "orb8_dns_skipped_packets": "counter", "orb8_dns_names_truncated": "counter",
    }  # fmt: skip
    assert families == expected
    assert "# TYPE orb8_flow_bytes_total counter" in text
    samples = _samples(registry)
    loaded = {s.labels["probe"]: s.value for s in _by_name(samples, "orb8_probes_loaded")}
    assert loaded == {"flows": 0.0, "syscalls": 0.0, "tcp": 0.0, "dns": 0.0}
    writes = {
        (s.labels["target"], s.labels["result"])
        for s in _by_name(samples, "orb8_status_writes_total")
    }
    assert writes == {(t, r) for t in ("report", "heartbeat") for r in ("ok", "error")}


def _runner(
    tmp_path: Path, *, api: ApiClient, probes: ProbeSet, wanted: frozenset[str], clock: Clock
) -> AgentRunner:
    agent = NodeAgent(node="node-a", dataplane=IdleDataPlane(), cgroup_root=tmp_path)
    gpu = GpuSessions(node="node-a", exporter_host="127.0.0.1", podresources_socket="/nonexistent")
    return AgentRunner(
        agent=agent, gpu=gpu, api=CustomObjectsApi(api), capability_report=dict, version="test",
        probes=probes, wanted_probes=wanted, clock=clock,
    )  # fmt: skip


@pytest.fixture
async def api() -> AsyncIterator[ApiClient]:
    """A client that is never called: the runner only needs one to exist."""
    async with ApiClient(configuration=Configuration(host="https://127.0.0.1:1")) as client:
        yield client


async def test_healthz_needs_a_ticking_loop_and_a_wanted_probe(
    tmp_path: Path, api: ApiClient
) -> None:
    clock = Clock()
    failed = ProbeSet(failures={"flows": "no BTF", "syscalls": "no tracefs"})
    wanted = frozenset({"flows", "syscalls"})
    runner = _runner(tmp_path, api=api, probes=failed, wanted=wanted, clock=clock)
    ok, why = runner.health()
    assert not ok and "no BTF" in why and "no tracefs" in why
    gpu_only = _runner(tmp_path, api=api, probes=ProbeSet(), wanted=frozenset(), clock=clock)
    assert gpu_only.health() == (True, "ok")
    clock.now += TICK_STALL_S + 1
    ok, why = gpu_only.health()
    assert not ok and "no tick" in why


async def test_readyz_follows_the_watch_not_the_start(tmp_path: Path, api: ApiClient) -> None:
    clock = Clock()
    runner = _runner(tmp_path, api=api, probes=ProbeSet(), wanted=frozenset(), clock=clock)
    runner.watch.clock = clock
    ok, why = runner.readiness()
    assert not ok and "not synced yet" in why
    runner.watch.synced()
    ok, why = runner.readiness()
    assert not ok and why == "waiting for NodeAgentConfig"
    runner._configured.set()
    assert runner.readiness() == (True, "ok")
    runner.watch.lost(error=ConnectionResetError("apiserver gone"))
    ok, why = runner.readiness()
    assert not ok and "disconnected (apiserver gone)" in why
    runner.watch.synced()
    assert runner.readiness() == (True, "ok")
    clock.now += READY_SYNC_AGE_S + 1  # connected, but silent for too long
    ok, why = runner.readiness()
    assert not ok and "no answer for" in why
