"""Fetch dcgm-exporter's /metrics over HTTP with one overall deadline."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from datetime import datetime

from orb8_agent.gpu.dcgm import parse_exposition
from orb8_agent.gpu.errors import ExporterFetchError, ExporterFormatError
from orb8_agent.gpu.model import ExporterScrape

DEFAULT_PORT = 9400
DEFAULT_PATH = "/metrics"
MAX_BODY_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ExporterEndpoint:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str = DEFAULT_PATH

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


def fetch_text(
    *, endpoint: ExporterEndpoint, timeout_s: float, max_bytes: int = MAX_BODY_BYTES
) -> str:
    """GET the exporter's text. The whole exchange must finish within timeout_s."""
    deadline = time.monotonic() + timeout_s
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout_s)
    try:
        try:
            conn.request("GET", endpoint.path, headers={"Accept": "text/plain"})
            if conn.sock is not None:
                conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            resp = conn.getresponse()
            if resp.status != 200:
                raise ExporterFetchError(
                    f"{endpoint.url} answered HTTP {resp.status} {resp.reason}".rstrip()
                )
            chunks: list[bytes] = []
            size = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
                chunk = resp.read1(_CHUNK)  # one recv at most: the deadline is checked between
                if not chunk:
                    # read1() returns b"" rather than raising when a body with a
                    # Content-Length ends early; the unread remainder tells.
                    if resp.length:
                        raise http.client.IncompleteRead(b"".join(chunks), resp.length)
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ExporterFetchError(
                        f"{endpoint.url} sent more than {max_bytes} bytes; refusing to parse it"
                    )
                chunks.append(chunk)
        except TimeoutError:
            raise ExporterFetchError(
                f"{endpoint.url} did not answer within {timeout_s:g}s"
            ) from None
        except ConnectionRefusedError:
            raise ExporterFetchError(
                f"connection refused at {endpoint.url}; is dcgm-exporter running on this "
                "node and reachable from the agent (hostPort or hostNetwork)?",
                unreachable=True,
            ) from None
        except http.client.IncompleteRead as exc:
            raise ExporterFetchError(
                f"{endpoint.url} closed the connection mid-response "
                f"after {len(exc.partial)} bytes (truncated)"
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            raise ExporterFetchError(
                f"{endpoint.url}: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from None
    finally:
        conn.close()
    return decode_body(b"".join(chunks), url=endpoint.url)


def decode_body(body: bytes, *, url: str) -> str:
    """The exporter's body as text; ExporterFormatError for anything but UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ExporterFormatError(f"{url} sent a body that is not UTF-8 text") from None


def scrape_exporter(
    *, endpoint: ExporterEndpoint, timeout_s: float, now: datetime
) -> ExporterScrape:
    """Fetch and parse; raises ExporterFetchError or ExporterFormatError."""
    text = fetch_text(endpoint=endpoint, timeout_s=timeout_s)
    return parse_exposition(text, fetched_at=now)
