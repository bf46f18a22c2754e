"""The DNS probe's Prometheus families (rendered by the agent's collector).

Per pod only (namespace, pod) and a closed ``rcode`` set (NOERROR, NXDOMAIN,
SERVFAIL, REFUSED, FORMERR, other); never a query name or an address: names
are unbounded and belong in the session's status, not in label values. Pods
beyond ``--metrics-max-pods`` are folded into ``pod="_other"`` like traffic.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from orb8_agent.control.dns import DnsPodCounts
from orb8_agent.dataplane.dns import DnsCollector
from orb8_common.errors import Orb8Error

SKIP_REASONS = ("malformed", "qdcount", "not_query", "tcp_skipped", "map_full")


def dns_families(
    *, counts: DnsPodCounts, probe: DnsCollector | None, attached: int
) -> Iterator[Metric]:
    queries = CounterMetricFamily(
        "orb8_dns_queries", "DNS queries the DNS probe saw on the pod's host veth",
        labels=["namespace", "pod"],
    )  # fmt: skip
    for (namespace, pod), count in sorted(counts.queries.items()):
        queries.add_metric([namespace, pod], count)
    answers = CounterMetricFamily(
        "orb8_dns_answers", "DNS answers the DNS probe saw on the pod's host veth, by rcode",
        labels=["namespace", "pod", "rcode"],
    )  # fmt: skip
    for (namespace, pod, rcode), count in sorted(counts.answers.items()):
        answers.add_metric([namespace, pod, rcode], count)
    latency = SummaryMetricFamily(
        "orb8_dns_latency_seconds", "Query-to-answer time of answers matched to their query "
        "(same client address, port and DNS id), summed in the kernel",
    )  # fmt: skip
    latency.add_metric([], count_value=counts.latency_count, sum_value=counts.latency_sum_ns / 1e9)
    yield from (queries, answers, latency)
    yield GaugeMetricFamily(
        "orb8_dns_attached_interfaces", "Host veths the DNS probe is attached to", value=attached
    )
    skipped = CounterMetricFamily(
        "orb8_dns_skipped_packets", "DNS-port packets not counted in a row, by reason: "
        "malformed, qdcount (not one question), not_query (other opcode or direction), "
        "tcp_skipped (segment not one whole message), map_full", labels=["reason"],
    )  # fmt: skip
    truncated = CounterMetricFamily(
        "orb8_dns_names_truncated", "Queries and answers whose name was cut at 128 bytes"
    )
    if probe is not None:
        try:
            stats = probe.stats()
        except (Orb8Error, OSError):
            stats = None  # closing under the scrape: empty this time
        if stats is not None:
            for reason in SKIP_REASONS:
                skipped.add_metric([reason], getattr(stats, reason))
            truncated.add_metric([], stats.name_truncated)
    yield from (skipped, truncated)
