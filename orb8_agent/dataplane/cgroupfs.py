"""Find the cgroup v2 hierarchy and map paths and pids to cgroup ids."""

from __future__ import annotations

import os
from pathlib import Path

from orb8_common.errors import UsageError


def cgroup2_mount(*, mountinfo: Path = Path("/proc/self/mountinfo")) -> Path:
    """Where cgroup v2 is mounted (``/sys/fs/cgroup`` or, on hybrid hosts,
    ``/sys/fs/cgroup/unified``)."""
    for line in mountinfo.read_text().splitlines():
        # fields: id parent major:minor root mountpoint opts [optional...] - fstype source opts
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4].replace("\\040", " "))
    raise UsageError("cgroup v2 is not mounted; mount -t cgroup2 none /sys/fs/cgroup")


def cgroup_id(*, path: Path) -> int:
    """The id the kernel reports for a cgroup v2 directory: its inode number."""
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        raise UsageError(f"cgroup {path} does not exist") from None


def resolve(*, path: str) -> Path:
    """A cgroup given as an absolute directory or relative to the v2 mount."""
    given = Path(path)
    mount = cgroup2_mount()
    candidate = given if given.is_absolute() and given.is_relative_to(mount) else None
    if candidate is None:
        candidate = mount / str(given).lstrip("/")
    if not (candidate / "cgroup.procs").is_file():
        raise UsageError(f"{path} is not a cgroup v2 directory (looked at {candidate})")
    return candidate


def cgroup_of_pid(*, pid: int) -> Path:
    """The cgroup v2 directory a process belongs to."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except FileNotFoundError:
        raise UsageError(f"no process with pid {pid}") from None
    for line in text.splitlines():
        if line.startswith("0::"):
            return cgroup2_mount() / line[3:].lstrip("/")
    raise UsageError(f"process {pid} is not in a cgroup v2 hierarchy")
