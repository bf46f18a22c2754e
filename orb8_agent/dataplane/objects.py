"""Where the compiled probes live."""

from __future__ import annotations

import os
from pathlib import Path

import orb8_agent.bpf


def object_path(*, name: str) -> Path:
    """Path of ``<name>.bpf.o``: $ORB8_BPF_DIR if set, else inside the package."""
    base = os.environ.get("ORB8_BPF_DIR") or os.path.dirname(orb8_agent.bpf.__file__)
    return Path(base) / f"{name}.bpf.o"
