"""Per-session DNS accounting on one node, and its Prometheus counters.

The DNS probe's rows carry the host veth they were seen on (which names the
pod), the client and the server. A row goes to every DNS session that
targets that pod, except when the client is another of the session's pods
on this node: that query is counted at the client's own veth (so a session
that targets both a client and a DNS server pod counts each query once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orb8_agent.control.report import PodName
from orb8_agent.dataplane.dns import DnsRow
from orb8_agent.dataplane.dns_table import DnsTotals
from orb8_common.models import DnsName, DnsSummary

UNANSWERED = "UNANSWERED"
# rcode label values of orb8_dns_answers_total: a closed set
METRIC_RCODES = frozenset({"NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR"})

# namespace, pod, name, qtype, rcode (None: queries)
RowKey = tuple[str, str, str, str, str | None]


@dataclass
class SessionDns:
    """A session's DNS rows on this node, cumulative, bounded in memory."""

    max_tracked: int = 5_000
    rows: dict[RowKey, DnsTotals] = field(default_factory=dict)
    untracked: int = 0
    base: DnsSummary = field(default_factory=DnsSummary)  # from before an agent restart

    @property
    def empty(self) -> bool:
        """Nothing counted here, nor carried over from before a restart."""
        return not self.rows and not self.untracked and self.base == DnsSummary()

    def restore(self, *, earlier: DnsSummary) -> None:
        """Continue from this node's last report: its totals and listed rows carry on."""
        self.base = earlier

    def add(self, *, pod: PodName, row: DnsRow) -> None:
        k = row.key
        key: RowKey = (pod.namespace, pod.name, k.name, k.qtype, k.rcode)
        totals = self.rows.get(key)
        if totals is None:
            if len(self.rows) >= self.max_tracked:
                self.untracked += row.count
                return
            totals = self.rows[key] = DnsTotals()
        totals.truncated = totals.truncated or k.truncated
        totals.add(
            count=row.count, matched=row.matched,
            latency_sum_ns=row.latency_sum_ns, latency_max_ns=row.latency_max_ns,
        )  # fmt: skip

    def summary(self, *, node: str, top: int) -> DnsSummary:
        queries: dict[tuple[str, str, str, str], int] = {}
        answered: dict[tuple[str, str, str, str], int] = {}
        names: dict[tuple[str, str, str, str, str], DnsName] = {}
        for (namespace, pod, name, qtype, rcode), t in self.rows.items():
            group = (namespace, pod, name, qtype)
            if rcode is None:
                queries[group] = queries.get(group, 0) + t.count
                continue
            answered[group] = answered.get(group, 0) + t.count
            names[(*group, rcode)] = DnsName(
                namespace=namespace, pod=pod, node=node, query=name, qtype=qtype, rcode=rcode,
                count=t.count, truncated=t.truncated,
                latency_ms=None if t.latency_avg_ms is None else round(t.latency_avg_ms, 3),
                latency_max_ms=round(t.latency_max_ns / 1e6, 3) if t.matched else None,
            )  # fmt: skip
        unanswered = 0
        for group, sent in queries.items():
            missing = sent - answered.get(group, 0)
            if missing > 0:
                unanswered += missing
                namespace, pod, name, qtype = group
                names[(*group, UNANSWERED)] = DnsName(
                    namespace=namespace, pod=pod, node=node, query=name, qtype=qtype,
                    rcode=UNANSWERED, count=missing,
                )  # fmt: skip
        for row in self.base.names:  # rows reported before a restart
            key = (row.namespace, row.pod, row.query, row.qtype, row.rcode)
            live = names.get(key)
            names[key] = row if live is None else _sum_rows(live, row)
        base = self.base
        nxdomain = sum(c for (*_, r), c in _counts(self.rows) if r == "NXDOMAIN") + base.nxdomain
        servfail = sum(c for (*_, r), c in _counts(self.rows) if r == "SERVFAIL") + base.servfail
        ranked = sorted(
            names.values(),
            key=lambda r: (-r.count, r.rcode not in ("NXDOMAIN", "SERVFAIL"), r.query, r.rcode),
        )
        return DnsSummary(
            queries=sum(queries.values()) + base.queries,
            answers=sum(answered.values()) + base.answers,
            nxdomain=nxdomain,
            servfail=servfail,
            unanswered=unanswered + base.unanswered,
            errors=nxdomain + servfail,
            names=tuple(ranked[: max(top, 0)]),
        )


def _counts(rows: Mapping[RowKey, DnsTotals]) -> Iterable[tuple[RowKey, int]]:
    return ((k, t.count) for k, t in rows.items())


def _sum_rows(a: DnsName, b: DnsName) -> DnsName:
    weights = [(r.latency_ms, r.count) for r in (a, b) if r.latency_ms is not None and r.count]
    total = sum(w for _, w in weights)
    maxes = [m for m in (a.latency_max_ms, b.latency_max_ms) if m is not None]
    return a.model_copy(
        update={
            "count": a.count + b.count,
            "latency_ms": round(sum(v * w for v, w in weights) / total, 3) if total else None,
            "latency_max_ms": max(maxes) if maxes else None,
            "truncated": a.truncated or b.truncated,
        }
    )


def metric_rcode(rcode: str) -> str:
    return rcode if rcode in METRIC_RCODES else "other"


@dataclass
class DnsPodCounts:
    """Per-pod DNS counters for /metrics (pods through the agent's PodSlots cap)."""

    queries: dict[tuple[str, str], int] = field(default_factory=dict)
    answers: dict[tuple[str, str, str], int] = field(default_factory=dict)  # + metric rcode
    latency_sum_ns: int = 0  # node-wide, over answers matched to their query
    latency_count: int = 0

    def add(self, *, pod: tuple[str, str], row: DnsRow) -> None:
        if row.key.rcode is None:
            self.queries[pod] = self.queries.get(pod, 0) + row.count
            return
        key = (*pod, metric_rcode(row.key.rcode))
        self.answers[key] = self.answers.get(key, 0) + row.count
        self.latency_sum_ns += row.latency_sum_ns
        self.latency_count += row.matched

    def forget(self, *, gone: set[tuple[str, str]]) -> None:
        self.queries = {k: v for k, v in self.queries.items() if k not in gone}
        self.answers = {k: v for k, v in self.answers.items() if (k[0], k[1]) not in gone}


def dns_share(
    *, dns: SessionDns | None, probe_loaded: bool, node: str, top: int
) -> DnsSummary | None:
    """A session's DNS share in its node entry; None leaves the share out.

    A session without the DNS probe (``dns`` None) has no share, so its
    DNS-ERRORS column stays empty. With the probe loaded the share is there
    from the first report, zeros until a query is seen, so the column reads
    0. Where the probe is not loaded and nothing was counted before, there
    is no share either: a 0 would read as "no errors" while nothing watches.
    """
    if dns is None or (not probe_loaded and dns.empty):
        return None
    return dns.summary(node=node, top=top)
