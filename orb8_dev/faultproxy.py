"""A fault-injecting TLS proxy in front of the real kube-apiserver (loopback only).

Clients (an agent, the operator) get a kubeconfig pointing here; the proxy
terminates TLS with the apiserver's own certificate (valid for 127.0.0.1),
forwards each request on a fresh upstream TLS connection, and on the way
can answer a request with an injected status (409, 429 with Retry-After,
500, 503), cut a watch stream mid-response, or answer a watch with the
``410 Gone`` (Expired) event the apiserver sends for a compacted
resourceVersion. Every request line is recorded (``Faults.requests``), so
a test can tell a relist from a resumed watch. One request per client
connection (it answers ``Connection: close``), which keeps the forwarding
a byte pump.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from orb8_dev.controlplane import ControlPlane, _write_kubeconfig, free_port

SETTING_LOOK_S = 0.2  # how soon a streaming watch sees a changed cut setting
REASONS = {409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip


@dataclass
class Faults:
    """What to do to requests now; change it at any time from any thread."""

    status_rate: float = 0.0  # share of requests answered with one of ``statuses``
    statuses: tuple[int, ...] = (429, 500, 503)
    conflict_writes: bool = False  # answer every PUT/PATCH with 409
    cut_watches_after_s: float | None = None  # close watch responses this long after they begin
    # the next watch request whose path starts with this gets a 410 Expired event, once
    expire_next_watch: str | None = None
    injected: Counter[int] = field(default_factory=Counter)
    cut: int = 0
    watches_streaming: int = 0  # watch responses that have begun (their first bytes relayed)
    forwarded: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, target), in order


class FaultProxy:
    """Start with :meth:`start`; :attr:`kubeconfig` points a client at the proxy."""

    def __init__(self, *, plane: ControlPlane, state_dir: Path) -> None:
        self.plane = plane
        self.faults = Faults()
        self.port = free_port()
        self.kubeconfig = state_dir / "faultproxy.kubeconfig"
        self._upstream = plane.server.removeprefix("https://")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()
        self._random = random.Random(12)

    def start(self) -> FaultProxy:
        pki = self.plane.state_dir / "pki"
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self._client_tls = ssl.create_default_context(cafile=str(self.plane.ca_file))
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=serving), self._loop
        )
        self._server = future.result(timeout=30)
        _write_kubeconfig(
            path=self.kubeconfig, server=f"https://127.0.0.1:{self.port}",
            ca_file=self.plane.ca_file, token=self.plane.token,
        )  # fmt: skip
        return self

    def set(self, **changes: object) -> None:
        """Change the faults (``status_rate``, ``conflict_writes``, ``cut_watches_after_s``)."""
        with self._lock:
            for key, value in changes.items():
                setattr(self.faults, key, value)

    def requests(self) -> list[tuple[str, str]]:
        """Every (method, target) the proxy was asked for so far, in order."""
        with self._lock:
            return list(self.faults.requests)

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _decide(self, *, method: str, target: str) -> int | None:
        with self._lock:
            f = self.faults
            f.requests.append((method, target))
            if (
                f.expire_next_watch
                and "watch=" in target
                and target.startswith(f.expire_next_watch)
            ):
                f.expire_next_watch = None
                f.injected[410] += 1
                return 410
            if f.conflict_writes and method in ("PUT", "PATCH"):
                f.injected[409] += 1
                return 409
            if f.status_rate and self._random.random() < f.status_rate:
                status = self._random.choice(f.statuses)
                f.injected[status] += 1
                return status
            f.forwarded += 1
            return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            kept = [lines[0]]
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
                if line and name.lower() != "connection":
                    kept.append(line)
            body = await reader.readexactly(length) if length else b""
            status = self._decide(method=method, target=target)
            if status == 410:
                await self._expire(writer)
                return
            if status is not None:
                await self._answer(writer, status=status)
                return
            request = "\r\n".join([*kept, "Connection: close", "", ""]).encode("latin-1") + body
            await self._forward(writer, request=request, watch="watch=" in target)
        except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # close(): ending quietly keeps asyncio from logging a cancelled handler
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, *, status: int) -> None:
        body = json.dumps({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"injected by orb8 fault proxy: {status}", "code": status,
            "reason": REASONS[status].replace(" ", ""),
            **({"details": {"retryAfterSeconds": 1}} if status == 429 else {}),
        }).encode()  # fmt: skip
        extra = "Retry-After: 1\r\n" if status == 429 else ""
        writer.write(
            f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _expire(self, writer: asyncio.StreamWriter) -> None:
        """What the apiserver answers a watch from a compacted resourceVersion: 200, then one
        ERROR event carrying a 410 Status, then the end of the stream."""
        event = json.dumps({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version (injected by orb8 fault proxy)",
            "reason": "Expired", "code": 410,
        }}).encode() + b"\n"  # fmt: skip
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
            b"\r\nConnection: close\r\n\r\n"
            + f"{len(event):x}\r\n".encode()
            + event
            + b"\r\n0\r\n\r\n"
        )
        await writer.drain()

    async def _forward(self, writer: asyncio.StreamWriter, *, request: bytes, watch: bool) -> None:
        host, port = self._upstream.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(
            host, int(port), ssl=self._client_tls, server_hostname=host
        )
        try:
            up_writer.write(request)
            await up_writer.drain()
            began = self._loop.time()
            relayed = False
            while True:
                # Read the setting at every turn: a cut set while a watch is already
                # streaming applies to it too (a test sets it after its client's watch
                # may have begun, and that watch would otherwise run on uncut).
                timeout = self._until_cut(began=began) if watch else None
                try:
                    chunk = await asyncio.wait_for(up_reader.read(65536), timeout=timeout)
                except TimeoutError:
                    if self._until_cut(began=began) != 0.0:
                        continue  # only a look at the setting; not cut (yet)
                    with self._lock:
                        self.faults.cut += 1
                    # Mid-response: a partial chunk, then the connection drops.
                    writer.write(b'7f\r\n{"type":')
                    await writer.drain()
                    writer.transport.abort()
                    return
                if not chunk:
                    return
                writer.write(chunk)
                await writer.drain()
                if watch and not relayed:
                    relayed = True
                    with self._lock:
                        self.faults.watches_streaming += 1
        finally:
            up_writer.close()

    def _until_cut(self, *, began: float) -> float:
        """Seconds to read a watch before looking again (0.0: cut it now)."""
        with self._lock:
            cut_after = self.faults.cut_watches_after_s
        if cut_after is None:
            return SETTING_LOOK_S
        return min(SETTING_LOOK_S, max(0.0, began + cut_after - self._loop.time()))
