"""A TraceSession's ``status.dns`` from its nodes' DNS shares.

Totals add up over nodes (each node counts only its own pods' veths, so a
query is never on two nodes). Rows of the same (pod, name, type, rcode)
add up too (a pod that moved between nodes), their mean latency weighted by
count; the top ``top_names`` by count are kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from orb8_common.models import DnsName, DnsSummary, NodeEntry

RowKey = tuple[str, str, str, str, str]  # namespace, pod, query, qtype, rcode


def _rank(row: DnsName) -> tuple[int, int, str, str, str, str]:
    # errors first among equal counts: they are what a user opens this for
    error = 0 if row.rcode in ("NXDOMAIN", "SERVFAIL") else 1
    return (-row.count, error, row.query, row.qtype, row.rcode, f"{row.namespace}/{row.pod}")


def _combine(a: DnsName, b: DnsName) -> DnsName:
    weights = [(r.latency_ms, r.count) for r in (a, b) if r.latency_ms is not None and r.count]
    total = sum(w for _, w in weights)
    mean = sum(v * w for v, w in weights) / total if total else None
    maxes = [m for m in (a.latency_max_ms, b.latency_max_ms) if m is not None]
    return a.model_copy(
        update={
            "count": a.count + b.count,
            "latency_ms": None if mean is None else round(mean, 3),
            "latency_max_ms": max(maxes) if maxes else None,
            "truncated": a.truncated or b.truncated,
            "node": a.node if a.node == b.node else "",
        }
    )


def merge_dns(*, nodes: Iterable[NodeEntry], top_names: int) -> DnsSummary | None:
    """Cluster-wide DNS of a session; None when no node reported DNS."""
    shares = [n.dns for n in nodes if n.dns is not None]
    if not shares:
        return None
    rows: dict[RowKey, DnsName] = {}
    for share in shares:
        for row in share.names:
            key = (row.namespace, row.pod, row.query, row.qtype, row.rcode)
            rows[key] = _combine(rows[key], row) if key in rows else row
    ranked = sorted(rows.values(), key=_rank)
    nxdomain = sum(s.nxdomain for s in shares)
    servfail = sum(s.servfail for s in shares)
    return DnsSummary(
        queries=sum(s.queries for s in shares),
        answers=sum(s.answers for s in shares),
        nxdomain=nxdomain,
        servfail=servfail,
        unanswered=sum(s.unanswered for s in shares),
        errors=nxdomain + servfail,
        names=tuple(ranked[: max(top_names, 0)]),
    )
