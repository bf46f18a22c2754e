"""Prometheus families for watch loops (agent and operator use the same names)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from orb8_common.watchstate import WatchState


def watch_families(*, states: Iterable[WatchState]) -> Iterator[Metric]:
    """``orb8_watch_connected``, ``orb8_watch_reconnects_total`` and the last sync, by watch."""
    connected = GaugeMetricFamily(
        "orb8_watch_connected", "1 while the watch is connected to the apiserver",
        labels=["watch"],
    )  # fmt: skip
    reconnects = CounterMetricFamily(
        "orb8_watch_reconnects", "Times the watch failed and was started again",
        labels=["watch"],
    )  # fmt: skip
    last_sync = GaugeMetricFamily(
        "orb8_watch_last_sync_timestamp_seconds",
        "When the watch last heard from the apiserver (a listing, an event or a bookmark)",
        labels=["watch"],
    )
    for state in states:
        connected.add_metric([state.name], 1.0 if state.connected else 0.0)
        reconnects.add_metric([state.name], state.reconnects)
        if state.last_sync is not None:
            last_sync.add_metric([state.name], state.last_sync)
    yield connected
    yield reconnects
    yield last_sync
