"""status.dns from the nodes' DNS shares (pure merge, no cluster)."""

from __future__ import annotations

from orb8_common.models import DnsName, DnsSummary, NodeEntry, to_wire
from orb8_operator.dns import merge_dns


def row(pod: str, query: str, rcode: str, count: int, latency: float | None = 1.0) -> DnsName:
    return DnsName(
        namespace="shop", pod=pod, node="n", query=query, qtype="A", rcode=rcode, count=count,
        latency_ms=latency, latency_max_ms=latency,
    )  # fmt: skip


def share(*rows: DnsName, queries: int, nx: int = 0, sf: int = 0) -> DnsSummary:
    answers = sum(r.count for r in rows if r.rcode != "UNANSWERED")
    return DnsSummary(
        queries=queries, answers=answers, nxdomain=nx, servfail=sf,
        unanswered=queries - answers, errors=nx + sf, names=rows,
    )  # fmt: skip


def test_totals_add_rows_merge_and_rank() -> None:
    a_rows = (row("p1", "x.shop", "NOERROR", 5, 2.0), row("p1", "typo", "NXDOMAIN", 3))
    b_rows = (row("p1", "x.shop", "NOERROR", 5, 4.0), row("p2", "db", "SERVFAIL", 3))
    a = NodeEntry(node="a", dns=share(*a_rows, queries=8, nx=3))
    b = NodeEntry(node="b", dns=share(*b_rows, queries=9, sf=3))
    merged = merge_dns(nodes=[a, b, NodeEntry(node="c")], top_names=10)
    assert merged is not None
    assert (merged.queries, merged.answers, merged.nxdomain, merged.servfail) == (17, 16, 3, 3)
    assert merged.errors == 6 and merged.unanswered == 1
    first = merged.names[0]
    assert (first.query, first.count, first.latency_ms, first.latency_max_ms) == (
        "x.shop",
        10,
        3.0,
        4.0,
    )
    # equal counts: errors first, then by name
    assert [(r.query, r.rcode) for r in merged.names[1:]] == [
        ("db", "SERVFAIL"),
        ("typo", "NXDOMAIN"),
    ]


def test_top_names_cut_and_no_dns_is_none() -> None:
    rows = [row("p", f"n{i}", "NOERROR", 100 - i) for i in range(30)]
    merged = merge_dns(nodes=[NodeEntry(node="a", dns=share(*rows, queries=10_000))], top_names=5)
    assert merged is not None and [r.query for r in merged.names] == ["n0", "n1", "n2", "n3", "n4"]
    assert merged.queries == 10_000  # totals cover the rows left out
    assert merge_dns(nodes=[NodeEntry(node="a")], top_names=5) is None


def test_a_running_probe_without_queries_gives_a_zero_column_no_probe_none() -> None:
    # the agents' shares: zeros from a node whose probe runs, none from one without
    merged = merge_dns(nodes=[NodeEntry(node="a", dns=DnsSummary()), NodeEntry(node="b")],
                       top_names=10)  # fmt: skip
    assert merged is not None and to_wire(merged)["errors"] == 0
    assert merge_dns(nodes=[NodeEntry(node="a"), NodeEntry(node="b")], top_names=10) is None
