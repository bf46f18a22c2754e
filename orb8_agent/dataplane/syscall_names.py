"""Syscall nr ↔ name for the machine's architecture."""

from __future__ import annotations

import platform
from functools import cache

from orb8_common import syscall_table
from orb8_common.errors import UsageError

_TABLES: dict[str, dict[int, str]] = {
    "x86_64": syscall_table.X86_64,
    "aarch64": syscall_table.ARM64,
    "arm64": syscall_table.ARM64,
}


@cache
def table(*, arch: str | None = None) -> dict[int, str]:
    """nr → name for ``arch`` (default: this machine)."""
    machine = arch or platform.machine()
    try:
        return _TABLES[machine]
    except KeyError:
        raise UsageError(f"no syscall table for architecture {machine}") from None


@cache
def _by_name(arch: str | None) -> dict[str, int]:
    return {name: nr for nr, name in table(arch=arch).items()}


def name_of(*, nr: int, arch: str | None = None) -> str:
    return table(arch=arch).get(nr, f"syscall_{nr}")


def nr_of(*, name: str, arch: str | None = None) -> int:
    """The number of a syscall given by name (or as a decimal number)."""
    if name.isdigit():
        return int(name)
    try:
        return _by_name(arch)[name]
    except KeyError:
        raise UsageError(f"unknown syscall {name!r}") from None


def machine() -> str:
    """This machine's architecture as the syscall tables name it."""
    return platform.machine()


def is_known(*, name: str, arch: str | None = None) -> bool:
    """Whether ``name`` (or a decimal number) is a syscall of ``arch`` (default: this machine)."""
    try:
        nr_of(name=name, arch=arch)
    except UsageError:
        return False
    return True
