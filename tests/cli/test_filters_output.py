"""The filter and output layer shared by ``orb8 get``, ``orb8 top`` and ``orb8 trace``."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import pytest

from orb8_cli.filters import RowFilter, add_filter_arguments, filter_from_args
from orb8_cli.output import WatchPrinter, render
from orb8_cli.rowkinds import ALERTS, FLOWS
from orb8_cli.top import dns_errors, talkers_table
from orb8_cli.trace import flow_view
from orb8_common.errors import UsageError
from orb8_common.models import Alert, DnsSummary, Flow


def flow(
    src: dict[str, Any], dst: dict[str, Any], proto: str = "TCP", size: int = 100
) -> dict[str, Any]:
    return {"source": src, "destination": dst, "protocol": proto, "bytes": size, "packets": 1,
            "node": "n1"}  # fmt: skip


WEB = {"namespace": "shop", "pod": "web-1", "ip": "10.0.0.1", "port": 40000}
DB = {"namespace": "data", "pod": "db-0", "ip": "10.0.0.2", "port": 5432}
EXTERNAL = {"ip": "192.0.2.7", "port": 443}
DNS = {"namespace": "kube-system", "pod": "coredns-1", "ip": "10.0.0.10", "port": 53}
RAW = [
    flow(WEB, DB, size=500),  # shop/web-1 -> data/db-0:5432
    flow(WEB, EXTERNAL, size=300),  # shop/web-1 -> 192.0.2.7:443
    flow({**WEB, "port": 51000}, DNS, proto="UDP", size=80),
    flow({**DB, "port": 5432}, {**WEB, "port": 40001}, size=40),  # db answering web
]
ROWS = [Flow.model_validate(r) for r in RAW]  # as orb8 get parses them from the status


def parse(*argv: str) -> RowFilter:
    parser = argparse.ArgumentParser()
    add_filter_arguments(parser)
    return filter_from_args(parser.parse_args(argv), kind="flows", applies=FLOWS.filters)


def picked(row_filter: RowFilter) -> list[int]:
    return [i for i, r in enumerate(ROWS) if row_filter.matches(FLOWS.view(r))]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), [0, 1, 2, 3]),
        (("--pod-namespace", "data"), [0, 3]),
        (("--pod", "db-0"), [0, 3]),
        (("--pod", "shop/web-*"), [0, 1, 2, 3]),
        (("--pod", "data/web-*"), []),
        (("--protocol", "udp"), [2]),
        (("--port", "5432"), [0, 3]),
        (("--port", "443"), [1]),
        # egress: the source is a matching pod; ingress: the destination is
        (("--pod", "shop/web-1", "--direction", "egress"), [0, 1, 2]),
        (("--pod", "shop/web-1", "--direction", "ingress"), [3]),
        (("--pod-namespace", "data", "--direction", "egress"), [3]),
        (("--direction", "ingress"), [0, 2, 3]),  # any named pod receiving
        (("--pod", "web-1", "--protocol", "TCP", "--port", "443"), [1]),
    ],
)
def test_flow_filters(argv: tuple[str, ...], expected: list[int]) -> None:
    assert picked(parse(*argv)) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--port", "0"), "invalid port '0'"),
        (("--port", "http"), "invalid port 'http'"),
        (("--port", "65536"), "invalid port"),
        (("--protocol", "sctp"), "unknown protocol 'sctp'"),
        (("--direction", "both"), "invalid direction 'both'"),
        (("--pod", "a/b/c"), "invalid pod 'a/b/c'"),
        (("--pod", "/x"), "invalid pod"),
        (("--pod-namespace", ""), "invalid namespace"),
    ],
)
def test_bad_filter_values_are_usage_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        parse(*argv)
    assert "\n" not in str(err.value)


def test_filters_that_mean_nothing_for_alerts_are_refused() -> None:
    parser = argparse.ArgumentParser()
    add_filter_arguments(parser)
    args = parser.parse_args(["--port", "53"])
    with pytest.raises(UsageError, match="--port does not apply to alerts"):
        filter_from_args(args, kind="alerts", applies=ALERTS.filters)


def test_alerts_filter_by_pod() -> None:
    alerts = [Alert(namespace="shop", pod="web-1", syscall="ptrace"),
              Alert(namespace="data", pod="db-0", syscall="mount")]  # fmt: skip
    parser = argparse.ArgumentParser()
    add_filter_arguments(parser)
    row_filter = filter_from_args(parser.parse_args(["--pod", "data/*"]), kind="alerts",
                                  applies=ALERTS.filters)  # fmt: skip
    assert ALERTS.select(alerts, row_filter) == [alerts[1]]


def test_local_flows_use_their_own_direction_and_ignore_icmp_ports() -> None:
    local = {"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": 0, "dst_port": 2048,
             "protocol": "ICMP", "direction": "egress"}  # fmt: skip
    assert RowFilter(direction="egress").matches(flow_view(local))
    assert not RowFilter(direction="ingress").matches(flow_view(local))
    assert not RowFilter(port=2048).matches(flow_view(local))


def test_outputs() -> None:
    rows = ROWS[:2]
    # json/ndjson: each row as the status holds it (no defaults added), parsed on the way
    as_json = json.loads(render(kind=FLOWS, rows=rows, output="json"))
    assert as_json == RAW[:2]
    assert [Flow.model_validate(r) for r in as_json] == rows
    assert [
        json.loads(line) for line in render(kind=FLOWS, rows=rows, output="ndjson").splitlines()
    ] == as_json
    table = render(kind=FLOWS, rows=rows, output="table").splitlines()
    wide = render(kind=FLOWS, rows=rows, output="wide").splitlines()
    assert table[0].split()[:3] == ["SOURCE", "DESTINATION", "PROTO"]
    assert "SRC IP" in wide[0] and "SRC IP" not in table[0]
    assert table[1].split()[:2] == ["shop/web-1:40000", "data/db-0:5432"]
    assert render(kind=FLOWS, rows=[], output="table", empty="nothing here") == "nothing here"
    assert render(kind=FLOWS, rows=[], output="ndjson") == ""


def test_watch_printer_prints_only_what_changed() -> None:
    out = io.StringIO()
    printer = WatchPrinter(kind=FLOWS, output="ndjson", stream=out)
    assert printer.update(ROWS[:2]) == 2
    assert printer.update(ROWS[:2]) == 0
    grown = [ROWS[0].model_copy(update={"bytes": 900}), ROWS[1], ROWS[2]]
    assert printer.update(grown) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [RAW[0], RAW[1], {**RAW[0], "bytes": 900}, RAW[2]]

    out = io.StringIO()
    printer = WatchPrinter(kind=FLOWS, output="table", stream=out, empty="none yet")
    printer.update([])
    printer.update(ROWS[:1])
    printer.update([ROWS[0].model_copy(update={"bytes": 2048})])
    text = out.getvalue().splitlines()
    assert text[0] == "none yet" and text[1].startswith("SOURCE")
    assert "500 B" in text[2] and "2.0 KiB" in text[3] and len(text) == 4


def test_top_talkers_and_dns_errors() -> None:
    lines = talkers_table(ROWS)
    assert lines[0].split()[:4] == ["TALKER", "SENT", "RECEIVED", "FLOWS"]
    assert lines[1].split()[0] == "shop/web-1"  # 880 B sent + 40 B received: the largest
    assert dns_errors(None) == ["not reported by this session"]
    names = [
        {"query": "bad.example.", "qtype": "A", "rcode": "NXDOMAIN", "count": 3},
        {"query": "ok.example.", "qtype": "A", "rcode": "NOERROR", "count": 6},
    ]
    dns = DnsSummary.model_validate({"queries": 9, "nxdomain": 3, "servfail": 1, "names": names})
    text = "\n".join(dns_errors(dns))
    assert "nxdomain 3" in text and "servfail 1" in text and "queries" not in text
    assert "bad.example." in text and "ok.example." not in text
