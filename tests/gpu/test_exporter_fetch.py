"""Fetching /metrics from a real HTTP server, and every way that goes wrong."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from orb8_agent.gpu.errors import ExporterFetchError, ExporterFormatError
from orb8_agent.gpu.exporter import ExporterEndpoint, fetch_text, scrape_exporter
from orb8_dev.gpu_servers import ExporterBehavior, closed_port, exposition, fake_exporter
from tests.gpu import scenarios

NOW = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
TEXT = exposition(scenarios.whole_gpus(n=8).gpus)


def test_scrape_reads_all_gpus() -> None:
    with fake_exporter(ExporterBehavior(body=TEXT)) as ex:
        scrape = scrape_exporter(
            endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2, now=NOW
        )
    assert sorted(e.index for e in scrape.entities if e.index is not None) == list(range(8))


def test_chunked_body_is_read_whole() -> None:
    with fake_exporter(ExporterBehavior(body=TEXT, mode="chunked")) as ex:
        text = fetch_text(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2)
    assert text == TEXT


def test_chunked_body_cut_short_is_detected() -> None:
    with (
        fake_exporter(ExporterBehavior(body=TEXT, mode="chunked-truncated")) as ex,
        pytest.raises(ExporterFetchError, match="closed the connection mid-response"),
    ):
        fetch_text(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2)


def test_down_exporter_is_connection_refused() -> None:
    endpoint = ExporterEndpoint(port=closed_port())
    with pytest.raises(ExporterFetchError, match=r"connection refused at http://127\.0\.0\.1:"):
        fetch_text(endpoint=endpoint, timeout_s=1)


def test_slow_exporter_times_out_within_the_deadline() -> None:
    with fake_exporter(ExporterBehavior(body=TEXT, mode="slow", delay_s=8)) as ex:
        start = time.monotonic()
        with pytest.raises(ExporterFetchError, match=r"did not answer within 0.5s"):
            fetch_text(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=0.5)
        # gave up long before the server would have answered (generous for a busy machine)
        assert time.monotonic() - start < 4


def test_trickling_exporter_hits_the_overall_deadline() -> None:
    trickle_s = -(-len(TEXT.encode()) // 200) * 0.1  # 200-byte writes, 0.1 s apart
    assert trickle_s >= 5
    with fake_exporter(ExporterBehavior(body=TEXT, mode="trickle", delay_s=0.1)) as ex:
        start = time.monotonic()
        with pytest.raises(ExporterFetchError, match=r"did not answer within 0.5s"):
            fetch_text(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=0.5)
        # gave up long before the whole body could have arrived
        assert time.monotonic() - start < trickle_s / 2


def test_garbage_is_a_format_error() -> None:
    with (
        fake_exporter(ExporterBehavior(mode="garbage")) as ex,
        pytest.raises(ExporterFormatError, match="not UTF-8"),
    ):
        scrape_exporter(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2, now=NOW)


def test_html_error_page_is_a_format_error() -> None:
    with (
        fake_exporter(ExporterBehavior(body="<html><body>Bad Gateway</body></html>")) as ex,
        pytest.raises(ExporterFormatError, match="not valid Prometheus exposition"),
    ):
        scrape_exporter(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2, now=NOW)


def test_truncated_body_is_detected() -> None:
    with (
        fake_exporter(ExporterBehavior(body=TEXT, mode="truncated-body")) as ex,
        pytest.raises(
            ExporterFetchError, match=r"closed the connection mid-response after \d+ bytes"
        ),
    ):
        fetch_text(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2)


def test_http_error_status_is_reported() -> None:
    with (
        fake_exporter(ExporterBehavior(mode="http-500")) as ex,
        pytest.raises(ExporterFetchError, match="answered HTTP 500"),
    ):
        fetch_text(endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2)


def test_wrong_path_is_a_404() -> None:
    with fake_exporter(ExporterBehavior(body=TEXT)) as ex:
        endpoint = ExporterEndpoint(host=ex.host, port=ex.port, path="/wrong")
        with pytest.raises(ExporterFetchError, match="HTTP 404"):
            fetch_text(endpoint=endpoint, timeout_s=2)


def test_oversized_body_is_refused() -> None:
    with (
        fake_exporter(ExporterBehavior(body=TEXT)) as ex,
        pytest.raises(ExporterFetchError, match="more than 1000 bytes"),
    ):
        fetch_text(
            endpoint=ExporterEndpoint(host=ex.host, port=ex.port), timeout_s=2, max_bytes=1000
        )


def test_endpoint_url_brackets_ipv6() -> None:
    assert ExporterEndpoint(host="::1", port=9400).url == "http://[::1]:9400/metrics"
    assert ExporterEndpoint(host="10.0.0.7", port=9500, path="/m").url == "http://10.0.0.7:9500/m"
