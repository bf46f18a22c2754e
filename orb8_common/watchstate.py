"""The health of one list-then-watch loop, kept by the loop and read by probes and metrics.

A watch loop calls :meth:`WatchState.synced` whenever the apiserver answered
(a listing, any event, a bookmark) and :meth:`WatchState.lost` whenever it
failed; readiness asks :meth:`WatchState.healthy`. Plain data, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class WatchState:
    """Connected or not, how often it failed, and when it last heard from the apiserver."""

    name: str
    clock: Callable[[], float] = field(default=time.time, repr=False)
    connected: bool = False
    reconnects: int = 0  # failures followed by a retry (a server-side timeout is not one)
    last_sync: float | None = None  # wall-clock seconds of the latest answer
    last_error: str = ""

    def synced(self) -> None:
        self.connected = True
        self.last_sync = self.clock()

    def lost(self, *, error: BaseException | str) -> None:
        self.connected = False
        self.reconnects += 1
        self.last_error = str(error) or type(error).__name__

    def healthy(self, *, max_age_s: float) -> bool:
        """Connected, and heard from the apiserver within ``max_age_s`` seconds."""
        return (
            self.connected
            and self.last_sync is not None
            and self.clock() - self.last_sync <= max_age_s
        )

    def describe(self, *, max_age_s: float) -> str:
        """One line for a probe's answer."""
        if self.last_sync is None and not self.connected:
            return f"{self.name} watch: not synced yet" + (
                f" ({self.last_error})" if self.last_error else ""
            )
        if not self.connected:
            return f"{self.name} watch: disconnected ({self.last_error})"
        age = self.clock() - (self.last_sync or 0.0)
        if age > max_age_s:
            return f"{self.name} watch: no answer for {age:.0f}s"
        return f"{self.name} watch: synced {age:.0f}s ago"
