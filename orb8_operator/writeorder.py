"""Node configs before statuses: the order in which the operator's writes reach
the apiserver.

Agents act on their NodeAgentConfig; a session's status only reports. When
500 sessions arrive at once, each status write (and its Event) competes with
the rounds of NodeAgentConfig writes for the same apiserver. Here, status
writes take one of a few slots, and a slot is only used while no round of
node-config writes is under way: a round that starts holds the queued status
writes (those already sent finish) until it ends. The hold is bounded, so a
round that never ends cannot freeze every status.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ConfigsFirst"]


class ConfigsFirst:
    """Node-config write rounds go first; status writes, a few at a time, follow."""

    def __init__(self, *, status_writes: int, hold_max_s: float) -> None:
        self._slots = asyncio.Semaphore(status_writes)
        self._idle = asyncio.Event()  # no round of node-config writes is under way
        self._idle.set()
        self._rounds = 0
        self._hold_max_s = hold_max_s

    @property
    def writing_configs(self) -> bool:
        return self._rounds > 0

    @contextlib.asynccontextmanager
    async def configs(self) -> AsyncIterator[None]:
        """Around one round of node-config writes."""
        self._rounds += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._rounds -= 1
            if not self._rounds:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def status(self) -> AsyncIterator[None]:
        """Around one session's status write: a free slot, once no round is under way
        (or ``hold_max_s`` has passed)."""
        async with self._slots:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self._hold_max_s)
            yield
