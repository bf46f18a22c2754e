"""A session's DNS on one node: rows summed, unanswered derived, totals carried over a restart."""

from __future__ import annotations

from orb8_agent.control.dns import SessionDns
from orb8_agent.control.report import PodName
from orb8_agent.dataplane.dns import DnsRow, DnsRowKey

POD = PodName("shop", "client")


def dns_row(name: str, rcode: str | None, count: int, *, lat_ms: float = 0.0) -> DnsRow:
    key = DnsRowKey(ifindex=7, client_ip="10.0.0.2", server_ip="10.0.0.10", name=name,
                    qtype="A", rcode=rcode, truncated=False, tcp=False)  # fmt: skip
    matched = count if rcode is not None and lat_ms else 0
    lat_ns = int(lat_ms * 1e6)
    return DnsRow(
        key=key, count=count, matched=matched,
        latency_sum_ns=lat_ns * matched, latency_max_ns=lat_ns,
    )  # fmt: skip


def test_summary_counts_errors_and_unanswered() -> None:
    dns = SessionDns()
    for row in (dns_row("a.shop", None, 5), dns_row("a.shop", "NOERROR", 3, lat_ms=2.0),
                dns_row("a.shop", None, 1), dns_row("a.shop", "NOERROR", 1, lat_ms=6.0),
                dns_row("typo", None, 2), dns_row("typo", "NXDOMAIN", 2, lat_ms=1.0)):  # fmt: skip
        dns.add(pod=POD, row=row)
    s = dns.summary(node="n", top=10)
    assert (s.queries, s.answers, s.nxdomain, s.servfail, s.unanswered, s.errors) == (
        8,
        6,
        2,
        0,
        2,
        2,
    )
    rows = {(r.query, r.rcode): r for r in s.names}
    assert rows[("a.shop", "NOERROR")].count == 4
    assert rows[("a.shop", "NOERROR")].latency_ms == 3.0  # (3*2 + 1*6) / 4
    assert rows[("a.shop", "NOERROR")].latency_max_ms == 6.0
    assert rows[("a.shop", "UNANSWERED")].count == 2
    assert rows[("a.shop", "UNANSWERED")].latency_ms is None
    assert dns.summary(node="n", top=1).names[0].query == "a.shop"


def test_restart_carries_totals_and_rows_on() -> None:
    before = SessionDns()
    before.add(pod=POD, row=dns_row("typo", None, 3))
    before.add(pod=POD, row=dns_row("typo", "NXDOMAIN", 3, lat_ms=1.0))
    reported = before.summary(node="n", top=10)
    after = SessionDns()
    after.restore(earlier=reported)
    after.add(pod=POD, row=dns_row("typo", None, 1))
    after.add(pod=POD, row=dns_row("typo", "NXDOMAIN", 1, lat_ms=3.0))
    s = after.summary(node="n", top=10)
    assert (s.queries, s.answers, s.nxdomain, s.errors) == (4, 4, 4, 4)
    (row,) = s.names
    assert (row.count, row.latency_ms, row.latency_max_ms) == (4, 1.5, 3.0)
