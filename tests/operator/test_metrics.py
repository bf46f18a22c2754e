"""The operator's /metrics text, parsed back with prometheus_client's parser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orb8_common.watchstate import WatchState
from orb8_dev.controlplane import REPO_ROOT, ControlPlane
from orb8_operator.metrics import OperatorCollector, OperatorMetrics, serve


def _scrape(m: OperatorMetrics) -> tuple[dict[str, str], list[Sample]]:
    registry = CollectorRegistry()
    registry.register(OperatorCollector(metrics=m))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    return {f.name: f.type for f in families}, [s for f in families for s in f.samples]


def test_reconcile_durations_are_a_histogram_in_seconds_by_kind() -> None:
    m = OperatorMetrics(sessions_by_kind=lambda: {"TraceSession": 3}, pods_tracked=lambda: 42)
    for seconds in (0.0004, 0.003, 0.2, 30.0):
        m.observe_reconcile(kind="TraceSession", seconds=seconds)
    m.node_config_sync(ok=True)
    m.node_config_sync(ok=False)
    m.pods_watch = WatchState(name="pods")
    m.pods_watch.synced()
    types, samples = _scrape(m)
    assert types == {
        "orb8_operator_reconcile_duration_seconds": "histogram",
        "orb8_operator_sessions_active": "gauge",
        "orb8_operator_pods_tracked": "gauge",
        "orb8_operator_node_configs": "gauge",
        "orb8_operator_node_config_syncs": "counter",
        "orb8_watch_connected": "gauge",
        "orb8_watch_reconnects": "counter",
        "orb8_watch_last_sync_timestamp_seconds": "gauge",
        "orb8_operator_kopf_last_event_timestamp_seconds": "gauge",
    }
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    trace = (("kind", "TraceSession"),)
    assert got[("orb8_operator_reconcile_duration_seconds_count", trace)] == 4
    assert got[("orb8_operator_reconcile_duration_seconds_sum", trace)] == 30.2034
    assert got[("orb8_operator_reconcile_duration_seconds_bucket", (*trace, ("le", "0.001")))] == 1
    assert got[("orb8_operator_reconcile_duration_seconds_bucket", (*trace, ("le", "0.25")))] == 3
    assert got[("orb8_operator_reconcile_duration_seconds_bucket", (*trace, ("le", "+Inf")))] == 4
    assert got[("orb8_operator_sessions_active", trace)] == 3
    assert got[("orb8_operator_sessions_active", (("kind", "GpuTelemetry"),))] == 0
    assert got[("orb8_operator_pods_tracked", ())] == 42
    assert got[("orb8_operator_node_config_syncs_total", (("result", "error"),))] == 1
    assert got[("orb8_watch_connected", (("watch", "pods"),))] == 1
    assert ("orb8_operator_kopf_last_event_timestamp_seconds", ()) in got
    labels = {name for s in samples for name in s.labels}
    assert labels <= {"kind", "le", "result", "watch"}


def test_a_taken_metrics_port_is_a_one_line_error(control_plane: ControlPlane) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "orb8_operator.main", "--metrics-host", "127.0.0.1",
             "--metrics-port", str(port), "--liveness", "http://127.0.0.1:0/healthz"],
            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
            env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)},
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"orb8-operator: cannot serve metrics on 127.0.0.1:{port}: Address already in use "
        "(pick another --metrics-port, or 0 to turn it off)"
    ]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_readyz_follows_the_operators_own_watches() -> None:
    """/readyz (served with /metrics) is 503 until both watch loops synced, 503 with the
    reason while one is disconnected, and 200 again once it relisted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = OperatorMetrics()
    serve(host="127.0.0.1", port=port, metrics=m)
    code, why = _get(port, "/readyz")
    assert code == 503 and "pods watch: not started" in why, why
    m.pods_watch, m.nodes_watch = WatchState(name="pods"), WatchState(name="nodeagentconfigs")
    m.pods_watch.synced()
    code, why = _get(port, "/readyz")
    assert code == 503 and why == "nodeagentconfigs watch: not synced yet", why
    m.nodes_watch.synced()
    assert _get(port, "/readyz") == (200, "ok")
    m.nodes_watch.lost(error="Response payload is not completed")
    code, why = _get(port, "/readyz")
    assert code == 503 and "disconnected (Response payload is not completed)" in why
    assert "\n" not in why
    m.nodes_watch.synced()
    assert _get(port, "/readyz") == (200, "ok")
    code, text = _get(port, "/metrics")
    assert code == 200 and 'orb8_watch_connected{watch="nodeagentconfigs"} 1.0' in text
    assert _get(port, "/nope")[0] == 404
