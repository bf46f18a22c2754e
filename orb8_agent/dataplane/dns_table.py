"""Running DNS totals from the probe's per-read deltas, bounded in memory.

Rows are summed by their full key. :meth:`DnsTable.results` turns them into
what people read: one result per answer rcode, plus an ``UNANSWERED`` result
where more queries were seen than answers (lost, dropped, or still in flight
when read).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .dns import DnsRow, DnsRowKey

UNANSWERED = "UNANSWERED"

GroupKey = tuple[int, str, str, str, str, bool]  # ifindex, client, server, name, qtype, tcp


@dataclass(slots=True)
class DnsTotals:
    count: int = 0
    matched: int = 0
    latency_sum_ns: int = 0
    latency_max_ns: int = 0
    truncated: bool = False

    def add(self, *, count: int, matched: int, latency_sum_ns: int, latency_max_ns: int) -> None:
        self.count += count
        self.matched += matched
        self.latency_sum_ns += latency_sum_ns
        self.latency_max_ns = max(self.latency_max_ns, latency_max_ns)

    @property
    def latency_avg_ms(self) -> float | None:
        return self.latency_sum_ns / self.matched / 1e6 if self.matched else None


@dataclass(frozen=True, slots=True)
class DnsResult:
    ifindex: int
    client_ip: str
    server_ip: str
    name: str
    qtype: str
    rcode: str  # NOERROR, NXDOMAIN, ... or UNANSWERED
    tcp: bool
    truncated: bool
    totals: DnsTotals


def _group(key: DnsRowKey) -> GroupKey:
    return (key.ifindex, key.client_ip, key.server_ip, key.name, key.qtype, key.tcp)


class DnsTable:
    """Per-row totals across reads; at most ``max_rows`` distinct keys (the rest are counted)."""

    def __init__(self, *, max_rows: int = 20_000) -> None:
        self._rows: dict[DnsRowKey, DnsTotals] = {}
        self._max_rows = max_rows
        self.untracked = 0  # deltas dropped because the table was full

    def add(self, rows: Iterable[DnsRow]) -> None:
        for row in rows:
            totals = self._rows.get(row.key)
            if totals is None:
                if len(self._rows) >= self._max_rows:
                    self.untracked += row.count
                    continue
                totals = self._rows[row.key] = DnsTotals(truncated=row.key.truncated)
            totals.add(
                count=row.count, matched=row.matched,
                latency_sum_ns=row.latency_sum_ns, latency_max_ns=row.latency_max_ns,
            )  # fmt: skip

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def queries(self) -> int:
        return sum(t.count for k, t in self._rows.items() if k.rcode is None)

    def results(self) -> list[DnsResult]:
        """Answers by rcode plus unanswered queries; most frequent first."""
        queries: dict[GroupKey, int] = {}
        answered: dict[GroupKey, int] = {}
        truncated: dict[GroupKey, bool] = {}
        out: list[DnsResult] = []
        for key, totals in self._rows.items():
            group = _group(key)
            truncated[group] = truncated.get(group, False) or key.truncated
            if key.rcode is None:
                queries[group] = queries.get(group, 0) + totals.count
                continue
            answered[group] = answered.get(group, 0) + totals.count
            out.append(
                DnsResult(
                    *group[:5],
                    rcode=key.rcode,
                    tcp=key.tcp,
                    truncated=key.truncated,
                    totals=totals,
                )
            )
        for group, sent in queries.items():
            missing = sent - answered.get(group, 0)
            if missing > 0:
                out.append(
                    DnsResult(
                        *group[:5],
                        rcode=UNANSWERED,
                        tcp=group[5],
                        truncated=truncated[group],
                        totals=DnsTotals(count=missing),
                    )
                )
        out.sort(key=lambda r: (-r.totals.count, r.name, r.qtype, r.rcode, r.client_ip))
        return out
