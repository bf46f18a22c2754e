"""Helpers for CLI tests: a TraceSession whose status the test writes through the
status subresource of the real apiserver, and the CLI as a subprocess."""

from __future__ import annotations

import json
import queue
import secrets
import subprocess
import sys
import threading
from typing import IO, Any

from orb8_dev.controlplane import ControlPlane

ORB8 = [sys.executable, "-m", "orb8_cli.main"]


def make_session(plane: ControlPlane, *, status: dict[str, Any], name: str = "live") -> str:
    """A fresh namespace with one TraceSession carrying ``status``; returns the namespace."""
    namespace = f"cli-{secrets.token_hex(4)}"
    plane.kubectl("create", "namespace", namespace)
    manifest = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "web"}}},
                 "probes": {"network": {"enabled": True}, "syscalls": {"enabled": True}}},
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    write_status(plane, namespace=namespace, name=name, status=status)
    return namespace


def write_status(plane: ControlPlane, *, namespace: str, name: str, status: dict[str, Any]) -> None:
    plane.kubectl(
        "patch", "ts", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


class Lines:
    """A subprocess's output lines, read by a thread so a test can wait with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next(self, *, timeout: float) -> str | None:
        """The next line, None at the end of the stream; fails the wait on timeout."""
        line = self._queue.get(timeout=timeout)
        if line is not None:
            self.seen.append(line)
        return line


def flow(src: dict[str, Any], dst: dict[str, Any], *, proto: str = "TCP", size: int = 100,
         when: str = "2026-12-04T10:00:00Z") -> dict[str, Any]:  # fmt: skip
    return {"source": src, "destination": dst, "protocol": proto, "bytes": size, "packets": 3,
            "firstSeen": when, "lastSeen": when, "node": "node-a"}  # fmt: skip


def run(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ORB8, *args], capture_output=True, text=True, env=plane.env(),
                          timeout=60, check=False)  # fmt: skip
