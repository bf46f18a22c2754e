"""Per-pod traffic and alert counters for /metrics, with a bound on the number of pods.

Labels are (namespace, pod) plus a small closed set (direction, protocol,
syscall); never an IP, a port, a pid or a flow. At most ``max_pods`` pods get
series of their own. A pod that finds no free slot is *folded*: its counts go
to ``namespace="_other", pod="_other"``, and the fold is counted. Slots are
sticky, so every counter only ever grows: a pod keeps its slot while it is a
target on this node; when a slot frees, the folded pod with the most bytes
takes it (its own series starts at zero, what ``_other`` already holds stays
there). Among pods arriving together, the biggest senders are placed first.

Not thread-safe: the agent's single data-plane worker thread both feeds it
and renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from orb8_agent.control.flows import observation_direction
from orb8_agent.dataplane.models import Flow, TcpHealth

OTHER = "_other"
PodKey = tuple[str, str]  # (namespace, pod)
OTHER_POD: PodKey = (OTHER, OTHER)
ACTIVE_WINDOW_S = 30.0
MAX_ACTIVE_FLOWS = 200_000  # flows remembered for the active-flow gauge
DEFAULT_MAX_PODS = 500
# Connect latency histogram buckets (seconds), node-wide: no pod label, so its
# series count is fixed whatever the number of pods.
CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TCP_EVENTS = ("retransmits", "resets_sent", "resets_received", "connects")

ActiveKey = tuple[int, str, int, str, int, int, str]  # ifindex, src, sport, dst, dport, proto, dir


class PodSlots:
    """Which pods have series of their own; the rest are folded into ``_other``."""

    def __init__(self, *, max_pods: int) -> None:
        if max_pods < 0:
            raise ValueError("max_pods must not be negative")
        self.max_pods = max_pods
        self._own: set[PodKey] = set()
        self._folded: dict[PodKey, int] = {}  # folded pod → its bytes, to pick promotions
        self.capped_total = 0  # pods denied a slot (each time one is folded)

    def label(self, key: PodKey) -> PodKey:
        return key if key in self._own else OTHER_POD

    def admit(self, *, weights: Mapping[PodKey, int]) -> None:
        """Place pods not seen before, heaviest first; count those that must be folded."""
        new = [k for k in weights if k not in self._own and k not in self._folded]
        new.sort(key=lambda k: (-weights[k], k))
        for key in new:
            if len(self._own) < self.max_pods:
                self._own.add(key)
            else:
                self._folded[key] = 0
                self.capped_total += 1
        for key, weight in weights.items():
            if key in self._folded:
                self._folded[key] += weight

    def retain(self, *, present: Collection[PodKey]) -> set[PodKey]:
        """Forget pods no longer present; fill freed slots from the folded. Returns freed pods."""
        gone = self._own - set(present)
        self._own -= gone
        for key in [k for k in self._folded if k not in present]:
            del self._folded[key]
        free = self.max_pods - len(self._own)
        if free > 0 and self._folded:
            ranked = sorted(self._folded, key=lambda k: (-self._folded[k], k))[:free]
            for key in ranked:
                del self._folded[key]
                self._own.add(key)
        return gone

    @property
    def own(self) -> frozenset[PodKey]:
        return frozenset(self._own)

    @property
    def folded(self) -> int:
        return len(self._folded)


@dataclass
class Counts:
    bytes: int = 0
    packets: int = 0


class PodMetrics:
    """Bytes, packets and active flows per pod, alerts per pod and syscall."""

    def __init__(self, *, max_pods: int = DEFAULT_MAX_PODS, clock: Callable[[], float]) -> None:
        self.slots = PodSlots(max_pods=max_pods)
        self._clock = clock
        # (namespace, pod) as labelled, direction, protocol → counts
        self.traffic: dict[tuple[str, str, str, str], Counts] = {}
        self.alerts: dict[tuple[str, str, str], int] = {}  # (namespace, pod, syscall) → count
        self.tcp: dict[tuple[str, str, str], int] = {}  # (namespace, pod, TCP_EVENTS item) → count
        self.connect_buckets = [0] * (len(CONNECT_BUCKETS) + 1)  # the last one is +Inf
        self.connect_count = 0
        self.connect_seconds = 0.0
        # (namespace, pod, reason) → learned-baseline alerts (container windows that raised one)
        self.baseline_alerts: dict[tuple[str, str, str], int] = {}
        self._active: dict[ActiveKey, tuple[PodKey, float]] = {}
        self._last_prune = 0.0

    def add_flows(
        self,
        *,
        flows: Iterable[Flow],
        pod_of: Mapping[int, PodKey],
        pod_of_cgroup: Mapping[int, PodKey] | None = None,
    ) -> None:
        """Count one drain of the flow probes; ``pod_of`` maps a host veth's ifindex to its
        pod, ``pod_of_cgroup`` a hostNetwork pod's cgroup id to it."""
        by_cgroup = pod_of_cgroup or {}
        now = self._clock()
        batch: dict[tuple[PodKey, str, str], Counts] = {}
        for flow in flows:
            pod = by_cgroup.get(flow.cgroup_id) if flow.cgroup_id else pod_of.get(flow.ifindex)
            if pod is None:
                continue
            direction = observation_direction(observation=flow)
            key = (pod, direction, flow.protocol_name)
            counts = batch.get(key)
            if counts is None:
                counts = batch[key] = Counts()
            counts.bytes += flow.bytes
            counts.packets += flow.packets
            active: ActiveKey = (
                flow.ifindex, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port,
                flow.protocol, direction,
            )  # fmt: skip
            if active in self._active or len(self._active) < MAX_ACTIVE_FLOWS:
                self._active[active] = (pod, now)
        weights: dict[PodKey, int] = {}
        for (pod, _, _), counts in batch.items():
            weights[pod] = weights.get(pod, 0) + counts.bytes
        self.slots.admit(weights=weights)
        for (pod, direction, protocol), counts in batch.items():
            namespace, name = self.slots.label(pod)
            series = self.traffic.get((namespace, name, direction, protocol))
            if series is None:
                series = self.traffic[(namespace, name, direction, protocol)] = Counts()
            series.bytes += counts.bytes
            series.packets += counts.packets
        if now - self._last_prune >= ACTIVE_WINDOW_S / 2:
            self._prune(now=now)  # memory only: reads skip stale entries anyway

    def add_tcp(self, *, rows: Iterable[TcpHealth], pod_of: Mapping[int, PodKey]) -> None:
        """Count one drain of the TCP health probe; ``pod_of`` maps a netns inode to its pod."""
        for row in rows:
            pod = pod_of.get(row.netns)
            if pod is None:
                continue
            self.slots.admit(weights={pod: 0})
            namespace, name = self.slots.label(pod)
            for event, count in zip(
                TCP_EVENTS, (row.retransmits, row.resets_sent, row.resets_received, row.connects),
                strict=True,
            ):  # fmt: skip
                if count:
                    key = (namespace, name, event)
                    self.tcp[key] = self.tcp.get(key, 0) + count
            if row.connects:
                # one sample per connect at the tuple's mean (a tuple is almost always one connect)
                mean_s = row.connect_ns_total / row.connects / 1e9
                index = next(
                    (i for i, bound in enumerate(CONNECT_BUCKETS) if mean_s <= bound),
                    len(CONNECT_BUCKETS),
                )
                self.connect_buckets[index] += row.connects
                self.connect_count += row.connects
                self.connect_seconds += row.connect_ns_total / 1e9

    def add_alert(self, *, pod: PodKey, syscall: str) -> None:
        self.slots.admit(weights={pod: 0})
        namespace, name = self.slots.label(pod)
        self.alerts[(namespace, name, syscall)] = self.alerts.get((namespace, name, syscall), 0) + 1

    def add_baseline_alert(self, *, pod: PodKey, reason: str) -> None:
        self.slots.admit(weights={pod: 0})
        key = (*self.slots.label(pod), reason)
        self.baseline_alerts[key] = self.baseline_alerts.get(key, 0) + 1

    def retain(self, *, present: Collection[PodKey]) -> None:
        """Drop the series of pods that are no longer targets on this node."""
        gone = self.slots.retain(present=present)
        if not gone:
            return
        self.traffic = {k: v for k, v in self.traffic.items() if (k[0], k[1]) not in gone}
        self.alerts = {k: v for k, v in self.alerts.items() if (k[0], k[1]) not in gone}
        self.tcp = {k: v for k, v in self.tcp.items() if (k[0], k[1]) not in gone}
        self.baseline_alerts = {
            k: v for k, v in self.baseline_alerts.items() if (k[0], k[1]) not in gone
        }
        self._active = {k: v for k, v in self._active.items() if v[0] not in gone}

    def _prune(self, *, now: float) -> None:
        self._last_prune = now
        cutoff = now - ACTIVE_WINDOW_S
        self._active = {k: v for k, v in self._active.items() if v[1] >= cutoff}

    def active_flows(self) -> dict[PodKey, int]:
        """Flows seen within the last ``ACTIVE_WINDOW_S`` seconds, by pod as labelled."""
        cutoff = self._clock() - ACTIVE_WINDOW_S
        out: dict[PodKey, int] = {}
        for pod, seen in self._active.values():
            if seen >= cutoff:
                label = self.slots.label(pod)
                out[label] = out.get(label, 0) + 1
        return out
