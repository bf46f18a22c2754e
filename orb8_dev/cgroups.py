"""cgroup v2 directories for tests, always removed afterwards.

The v2 hierarchy is found from /proc/self/mountinfo (``/sys/fs/cgroup`` on
unified hosts, ``/sys/fs/cgroup/unified`` on hybrid ones). Each test cgroup
lives under ``<mount>/orb8-test/`` with a unique name; on exit its processes
are moved back to the root cgroup before the directory is removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from orb8_agent.dataplane.cgroupfs import cgroup2_mount

TEST_ROOT = "orb8-test"


@dataclass(frozen=True)
class Cgroup:
    path: Path

    @property
    def id(self) -> int:
        """The cgroup id BPF sees: the directory's inode number."""
        return os.stat(self.path).st_ino

    def add(self, *, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]

    def spawn(
        self, args: Sequence[str], *, enter: Sequence[str] = (), **popen: object
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` so that it runs entirely inside this cgroup.

        ``enter`` (say ``ip netns exec NS``) runs first, outside the cgroup, as
        a container runtime's set-up would; the child then signals that it is
        ready and blocks on a pipe until it has been moved here, so not a
        single syscall of the target program runs elsewhere.
        """
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        gate = (
            f"import os,sys; os.write({ready_w}, b'r'); os.close({ready_w}); "
            f"os.read({go_r}, 1); os.close({go_r}); os.execvp(sys.argv[1], sys.argv[1:])"
        )
        proc = subprocess.Popen(  # type: ignore[call-overload]
            [*enter, sys.executable, "-c", gate, *args], pass_fds=(go_r, ready_w), **popen
        )
        os.close(go_r)
        os.close(ready_w)
        try:
            os.read(ready_r, 1)
            self.add(pid=proc.pid)
        finally:
            os.write(go_w, b"x")
            os.close(go_w)
            os.close(ready_r)
        return proc  # type: ignore[no-any-return]


def remove_tree(path: Path) -> None:
    """Remove a cgroup directory and its children, moving their processes to the root."""
    root_procs = cgroup2_mount() / "cgroup.procs"
    for child in [p for p in path.iterdir() if p.is_dir()]:
        remove_tree(child)
    for _ in range(50):
        with contextlib.suppress(FileNotFoundError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    root_procs.write_text(pid)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # exiting tasks leave the cgroup a moment later
    path.rmdir()


@contextlib.contextmanager
def cgroup(*, relative: str | None = None) -> Iterator[Cgroup]:
    """A fresh cgroup v2 directory; ``relative`` nests it (kubelet-like layouts)."""
    base = cgroup2_mount() / TEST_ROOT
    base.mkdir(exist_ok=True)
    top = base / f"t-{secrets.token_hex(4)}"
    path = top / relative if relative else top
    path.mkdir(parents=True)
    try:
        yield Cgroup(path=path)
    finally:
        remove_tree(top)
