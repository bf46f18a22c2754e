"""Accumulate per-read deltas into running totals."""

from __future__ import annotations

from collections.abc import Iterable

from .models import Flow, FlowKey, SyscallCount


class FlowTable:
    """Flows merged by key across reads (bytes and packets add, flags OR)."""

    def __init__(self) -> None:
        self._flows: dict[FlowKey, Flow] = {}

    def add(self, flows: Iterable[Flow]) -> None:
        for f in flows:
            key = f.key
            cur = self._flows.get(key)
            if cur is None:
                self._flows[key] = Flow(**{n: getattr(f, n) for n in Flow.__slots__})
                continue
            cur.bytes += f.bytes
            cur.packets += f.packets
            cur.tcp_flags |= f.tcp_flags
            cur.first_seen_ns = min(cur.first_seen_ns, f.first_seen_ns)
            cur.last_seen_ns = max(cur.last_seen_ns, f.last_seen_ns)

    def __len__(self) -> int:
        return len(self._flows)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self._flows.values())

    def top(self, *, limit: int | None = None) -> list[Flow]:
        """Flows by bytes, largest first."""
        ordered = sorted(self._flows.values(), key=lambda f: (-f.bytes, -f.packets))
        return ordered if limit is None else ordered[:limit]


class SyscallTable:
    """Syscall counts merged by (cgroup, nr)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, int], SyscallCount] = {}

    def add(self, counts: Iterable[SyscallCount]) -> None:
        for c in counts:
            cur = self._counts.get((c.cgroup_id, c.nr))
            total = c.count + (cur.count if cur else 0)
            self._counts[(c.cgroup_id, c.nr)] = SyscallCount(c.cgroup_id, c.nr, c.name, total)

    def top(self) -> list[SyscallCount]:
        return sorted(self._counts.values(), key=lambda c: (-c.count, c.nr))

    @property
    def total(self) -> int:
        return sum(c.count for c in self._counts.values())
