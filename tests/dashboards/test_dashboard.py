"""The Grafana dashboard's shape, and the PromQL tokenizer the live check relies on.

Whether its metrics really exist is checked against a live scrape in
tests/e2e/test_metrics.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orb8_dev.controlplane import REPO_ROOT
from orb8_dev.promql import dashboard_expressions, metric_names

DASHBOARD = REPO_ROOT / "charts" / "orb8" / "dashboards" / "orb8.json"


def _load(path: Path = DASHBOARD) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text())
    return body


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (namespace, pod) (rate(orb8_flow_bytes_total{direction="egress"}[5m]))',
         {"orb8_flow_bytes_total"}),
        ("topk(10, sum without (instance) (rate(a_total[$__rate_interval])))", {"a_total"}),
        ("max by (instance) (orb8_ringbuf_used_bytes / orb8_ringbuf_size_bytes)",
         {"orb8_ringbuf_used_bytes", "orb8_ringbuf_size_bytes"}),
        ("histogram_quantile(0.99, sum by (le, kind) (rate(x_bucket[1m])))", {"x_bucket"}),
        ("time() - max(last_sync_seconds) > bool 1e3", {"last_sync_seconds"}),
        ('a{pod=~"${pod:regex}"} and on (pod) group_left (node) b offset 5m', {"a", "b"}),
        ("label_values(orb8_flow_bytes_total, namespace)", {"orb8_flow_bytes_total"}),
        ('count(c{le="+Inf", x="rate(y)"})', {"c"}),
    ],
)  # fmt: skip
def test_metric_names_keeps_only_metric_identifiers(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_query_uses_the_datasource_variable() -> None:
    dashboard = _load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["datasource"]["uid"] == "${datasource}"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_panels_cover_traffic_alerts_gpu_and_health() -> None:
    dashboard = _load()
    by_title = {
        p["title"]: set().union(*(metric_names(t["expr"]) for t in p["targets"]))
        for p in dashboard["panels"] if p["type"] != "row"
    }  # fmt: skip
    assert by_title["Top pods by egress"] == {"orb8_flow_bytes_total"}
    assert by_title["Top pods by ingress"] == {"orb8_flow_bytes_total"}
    assert "orb8_flows_active" in by_title["Active flows"]
    assert by_title["Protocol mix"] == {"orb8_flow_bytes_total"}
    assert by_title["Syscall alerts over time"] == {"orb8_syscall_alerts_total"}
    assert by_title["GPU utilisation per pod"] == {"orb8_gpu_utilization_ratio"}
    assert by_title["GPU memory per pod"] == {"orb8_gpu_memory_used_bytes"}
    assert "orb8_ringbuf_dropped_events_total" in by_title["Dropped events"]
    assert by_title["Watch state"] == {"orb8_watch_connected"}
    assert "orb8_status_writes_total" in by_title["Status write errors"]
    every = set().union(*(metric_names(e) for e in dashboard_expressions(dashboard)))
    assert all(name.startswith("orb8_") for name in every), every
