"""The agent's Prometheus metrics, read from the agent's state at scrape time.

Per-pod series carry only (namespace, pod) and a small closed set of other
labels (direction, protocol, syscall, probe, map, reason, state, result); never an IP, a
port, a pid or a flow. The number of pods with their own series is capped
(see ``orb8_agent.podmetrics``). Rendering runs on the data-plane worker
thread, the same thread that feeds the counters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orb8_agent.dataplane.probes import ProbeSet
from orb8_agent.dns_metrics import dns_families
from orb8_agent.gpu.metrics import GpuMetrics
from orb8_agent.podmetrics import CONNECT_BUCKETS
from orb8_common.errors import Orb8Error
from orb8_common.watchmetrics import watch_families
from orb8_common.watchstate import WatchState

if TYPE_CHECKING:
    from orb8_agent.control.agent import NodeAgent

PROBES = ("flows", "syscalls", "tcp")
TRAFFIC_LABELS = ["namespace", "pod", "direction", "protocol"]


class AgentCollector(Collector):
    def __init__(
        self, *, agent: NodeAgent, probes: ProbeSet, watches: Sequence[WatchState],
        gpu: GpuMetrics | None = None, writes: StatusWrites | None = None,
    ) -> None:  # fmt: skip
        self._agent = agent
        self._writes = writes
        self._probes = probes
        self._watches = watches  # read live: the runner adds watches while they run
        self._gpu = gpu

    def collect(self) -> Iterator[Metric]:
        yield from self._traffic()
        yield from self._node()
        yield from self._probe_families()
        yield from watch_families(states=tuple(self._watches))
        yield from dns_families(
            counts=self._agent.dns_counts, probe=self._probes.dns,
            attached=len(self._agent.dns_interfaces),
        )  # fmt: skip
        if self._writes is not None:
            yield self._writes.family()

    def _traffic(self) -> Iterator[Metric]:
        pods = self._agent.pod_metrics
        flow_bytes = CounterMetricFamily(
            "orb8_flow_bytes", "Bytes the flow probe counted on the pod's host veth "
            "(skb->len, pod-relative direction)", labels=TRAFFIC_LABELS,
        )  # fmt: skip
        flow_packets = CounterMetricFamily(
            "orb8_flow_packets", "Packets the flow probe counted on the pod's host veth",
            labels=TRAFFIC_LABELS,
        )  # fmt: skip
        for (namespace, pod, direction, protocol), counts in sorted(pods.traffic.items()):
            flow_bytes.add_metric([namespace, pod, direction, protocol], counts.bytes)
            flow_packets.add_metric([namespace, pod, direction, protocol], counts.packets)
        active = GaugeMetricFamily(
            "orb8_flows_active", "Flows (5-tuple and direction) seen on the pod's host veth "
            "in the last 30 seconds", labels=["namespace", "pod"],
        )  # fmt: skip
        for (namespace, pod), count in sorted(pods.active_flows().items()):
            active.add_metric([namespace, pod], count)
        alerts = CounterMetricFamily(
            "orb8_syscall_alerts", "Alert-list syscalls made in the pod's containers",
            labels=["namespace", "pod", "syscall"],
        )  # fmt: skip
        for (namespace, pod, syscall), count in sorted(pods.alerts.items()):
            alerts.add_metric([namespace, pod, syscall], count)
        baseline = CounterMetricFamily(
            "orb8_syscall_baseline_alerts", "Learned-baseline alerts raised for the pod's "
            "containers, by reason (one per container, syscall and window)",
            labels=["namespace", "pod", "reason"],
        )  # fmt: skip
        for (namespace, pod, reason), count in sorted(pods.baseline_alerts.items()):
            baseline.add_metric([namespace, pod, reason], count)
        yield from (flow_bytes, flow_packets, active, alerts, baseline)
        yield from self._tcp()
        capped = CounterMetricFamily(
            "orb8_metrics_series_capped", "Pods folded into pod=\"_other\" because "
            "--metrics-max-pods pods already had series of their own", labels=["group"],
        )  # fmt: skip
        capped.add_metric(["traffic"], pods.slots.capped_total)
        if self._gpu is not None:
            capped.add_metric(["gpu"], self._gpu.capped_total)
        yield capped
        yield GaugeMetricFamily(
            "orb8_metrics_folded_pods", "Pods whose traffic and alerts are counted in "
            "pod=\"_other\" right now", value=pods.slots.folded,
        )  # fmt: skip

    def _tcp(self) -> Iterator[Metric]:
        pods = self._agent.pod_metrics
        retrans = CounterMetricFamily(
            "orb8_tcp_retransmits", "TCP segments the pod's sockets sent again",
            labels=["namespace", "pod"],
        )  # fmt: skip
        resets = CounterMetricFamily(
            "orb8_tcp_resets", "TCP RSTs the pod's sockets sent or received (that reset them)",
            labels=["namespace", "pod", "direction"],
        )  # fmt: skip
        connects = CounterMetricFamily(
            "orb8_tcp_connects", "TCP connects from the pod that got established",
            labels=["namespace", "pod"],
        )  # fmt: skip
        for (namespace, pod, event), count in sorted(pods.tcp.items()):
            if event == "retransmits":
                retrans.add_metric([namespace, pod], count)
            elif event == "connects":
                connects.add_metric([namespace, pod], count)
            else:
                direction = "sent" if event == "resets_sent" else "received"
                resets.add_metric([namespace, pod, direction], count)
        cumulative, buckets = 0, []
        for bound, count in zip(
            (*CONNECT_BUCKETS, float("inf")), pods.connect_buckets, strict=True
        ):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency = HistogramMetricFamily(
            "orb8_tcp_connect_latency_seconds", "SYN sent to ESTABLISHED of the target pods' "
            "connects on this node (no pod label: fixed series count)",
            buckets=buckets, sum_value=pods.connect_seconds,
        )  # fmt: skip
        yield from (retrans, resets, connects, latency)

    def _node(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "orb8_active_sessions", "Trace sessions this node is working on",
            value=len(self._agent.sessions()),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "orb8_pods_tracked", "Target pods of the trace sessions on this node",
            value=self._agent.tracked_pods,
        )  # fmt: skip
        containers = GaugeMetricFamily(
            "orb8_syscall_baseline_containers", "Containers with a learned syscall baseline, "
            "by state (learning or learned), over the sessions served", labels=["state"],
        )  # fmt: skip
        for state, count in sorted(self._agent.baseline_containers().items()):
            containers.add_metric([state], count)
        yield containers
        windows = CounterMetricFamily(
            "orb8_syscall_baseline_windows", "Container windows the learned baselines learned "
            "from or judged", labels=["result"],
        )  # fmt: skip
        for result, count in sorted(self._agent.baseline_windows().items()):
            windows.add_metric([result], count)
        yield windows
        yield GaugeMetricFamily(
            "orb8_attached_interfaces", "Host veths the flow probe is attached to",
            value=len(self._agent.attached_interfaces),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "orb8_flow_filter_unapplied_pods", "Target pods whose kernel flow filter could not "
            "be written (a filter map full): their veths count every packet, sessions still "
            "filter their rows", value=self._agent.filter_unapplied_pods,
        )  # fmt: skip
        yield CounterMetricFamily(
            "orb8_flow_filter_write_failures", "Interfaces whose kernel flow filter write was "
            "refused, counted at each attempt (TraceSession spec.probes.network.filter)",
            value=self._agent.filter_write_failures,
        )  # fmt: skip

    def _probe_families(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily(
            "orb8_probes_loaded", "1 when the probe is loaded and attached", labels=["probe"]
        )
        loaded.add_metric(["flows"], 1.0 if self._probes.flows is not None else 0.0)
        loaded.add_metric(["syscalls"], 1.0 if self._probes.syscalls is not None else 0.0)
        loaded.add_metric(["tcp"], 1.0 if self._probes.tcp is not None else 0.0)
        loaded.add_metric(["dns"], 1.0 if self._probes.dns is not None else 0.0)
        yield loaded
        map_full = CounterMetricFamily(
            "orb8_map_full_errors", "Kernel map inserts that failed because the map was full",
            labels=["map"],
        )  # fmt: skip
        filtered = CounterMetricFamily(
            "orb8_flow_filtered_packets", "Packets the sessions' flow filters kept out of the "
            "flow maps (TraceSession spec.probes.network.filter)",
        )  # fmt: skip
        evictions = CounterMetricFamily(
            "orb8_flow_map_evictions", "Flows the LRU flow map evicted before they were read "
            "(estimate: inserted minus read)",
        )  # fmt: skip
        events = CounterMetricFamily(
            "orb8_ringbuf_events", "Alert events the syscall probe wrote into its ring buffer"
        )
        drops = CounterMetricFamily(
            "orb8_ringbuf_dropped_events", "Alert events lost, by reason: the per-cgroup rate "
            "cap, a full ring buffer, or unreadable in user space", labels=["reason"],
        )  # fmt: skip
        used = GaugeMetricFamily(
            "orb8_ringbuf_used_bytes", "Bytes in the alert ring buffer not consumed yet"
        )
        size = GaugeMetricFamily("orb8_ringbuf_size_bytes", "Size of the alert ring buffer")
        flows, syscalls = self._probes.flows, self._probes.syscalls
        try:
            if flows is not None:
                fstats = flows.stats()
                map_full.add_metric(["flows"], fstats.map_full)
                evictions.add_metric([], fstats.evicted_estimate)
                filtered.add_metric([], fstats.filtered)
            if syscalls is not None:
                sstats = syscalls.stats()
                map_full.add_metric(["syscall_counts"], sstats.count_map_full)
                events.add_metric([], sstats.events)
                drops.add_metric(["rate_limited"], sstats.rate_limited)
                drops.add_metric(["ringbuf_full"], sstats.ringbuf_full)
                drops.add_metric(["user_space"], sstats.lost_in_user_space)
                used.add_metric([], syscalls.ringbuf_used_bytes())
                size.add_metric([], syscalls.ringbuf_size)
            if self._probes.tcp is not None:
                tstats = self._probes.tcp.stats()
                map_full.add_metric(["tcp_health"], tstats["map_full"])
                map_full.add_metric(["tcp_connect_start"], tstats["start_map_full"])
        except (Orb8Error, OSError, ValueError):
            pass  # a probe closing under the scrape: its families stay empty this time
        yield from (map_full, evictions, filtered, events, drops, used, size)


class StatusWrites:
    """Writes to the Kubernetes API by target and result (rendered without ``_created``)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {
            (target, result): 0 for target in ("report", "heartbeat") for result in ("ok", "error")
        }

    def add(self, *, target: str, result: str) -> None:
        self.counts[(target, result)] = self.counts.get((target, result), 0) + 1

    def family(self) -> Metric:
        family = CounterMetricFamily(
            "orb8_status_writes", "Writes to the Kubernetes API: target session (a session's "
            "status.nodes entry) or nodeagentconfig (the heartbeat); result ok, gone or error",
            labels=["target", "result"],
        )  # fmt: skip
        for (target, result), count in sorted(self.counts.items()):
            family.add_metric([target, result], count)
        return family


def build_registry(
    *, agent: NodeAgent, probes: ProbeSet, watches: Sequence[WatchState],
    gpu: GpuMetrics | None = None,
) -> tuple[CollectorRegistry, StatusWrites]:  # fmt: skip
    """The agent's registry and its counter of status writes by target and result.

    The GPU collector is registered separately (it renders its own families);
    ``gpu`` only lends its fold count to ``orb8_metrics_series_capped``.
    """
    writes = StatusWrites()
    registry = CollectorRegistry()
    registry.register(
        AgentCollector(agent=agent, probes=probes, watches=watches, gpu=gpu, writes=writes)
    )
    return registry, writes
