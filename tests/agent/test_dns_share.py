"""Whether a node entry carries a DNS share: the DNS-ERRORS column reads 0, not empty,
once the DNS probe runs for the session, and stays empty for a session without it."""

from __future__ import annotations

from orb8_agent.control.dns import SessionDns, dns_share
from orb8_agent.control.report import PodName
from orb8_agent.dataplane.dns import DnsRow, DnsRowKey
from orb8_common.models import DnsName, DnsSummary, to_wire


def test_probe_running_and_no_query_yet_is_zero() -> None:
    share = dns_share(dns=SessionDns(), probe_loaded=True, node="n", top=10)
    assert share == DnsSummary()
    assert to_wire(share)["errors"] == 0  # .status.dns.errors, the printer column


def test_no_dns_probe_asked_for_means_no_share() -> None:
    assert dns_share(dns=None, probe_loaded=True, node="n", top=10) is None
    assert dns_share(dns=None, probe_loaded=False, node="n", top=10) is None


def test_probe_not_loaded_and_nothing_counted_means_no_share() -> None:
    assert dns_share(dns=SessionDns(), probe_loaded=False, node="n", top=10) is None


def test_what_was_counted_stays_when_the_probe_is_gone() -> None:
    restored = SessionDns()
    restored.restore(earlier=DnsSummary(queries=3, answers=3, nxdomain=2, errors=2, names=(
        DnsName(namespace="shop", pod="a", node="n", query="typo", qtype="A", rcode="NXDOMAIN",
                count=2),
    )))  # fmt: skip
    share = dns_share(dns=restored, probe_loaded=False, node="n", top=10)
    assert share is not None and share.errors == 2
    live = SessionDns()
    live.add(pod=PodName("shop", "a"), row=_answer())
    share = dns_share(dns=live, probe_loaded=False, node="n", top=10)
    assert share is not None and share.nxdomain == 1 and share.errors == 1


def _answer() -> DnsRow:
    key = DnsRowKey(ifindex=7, client_ip="10.0.0.2", server_ip="10.0.0.10", name="typo",
                    qtype="A", rcode="NXDOMAIN", truncated=False, tcp=False)  # fmt: skip
    return DnsRow(key=key, count=1, matched=1, latency_sum_ns=1000, latency_max_ns=1000)
