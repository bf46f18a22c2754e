"""The syscall names orb8 knows: the admission enum and the spec check.

One source, the generated per-architecture tables in
:mod:`orb8_common.syscall_table`. A name is known when any supported
architecture has it, so one session can span x86_64 and arm64 nodes; an agent
whose architecture lacks a name reports that on its node.
"""

from __future__ import annotations

from orb8_common import syscall_table

__all__ = ["KNOWN_SYSCALLS", "is_known_syscall"]

KNOWN_SYSCALLS: tuple[str, ...] = tuple(
    sorted(set(syscall_table.X86_64.values()) | set(syscall_table.ARM64.values()))
)
_KNOWN = frozenset(KNOWN_SYSCALLS)


def is_known_syscall(*, name: str) -> bool:
    return name in _KNOWN
