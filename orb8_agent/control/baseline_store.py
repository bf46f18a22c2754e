"""Learned baselines kept on the node, so an agent restart does not relearn them.

One JSON file, ``/run/orb8/<agent-id>/baseline.json`` by default (a hostPath
in the DaemonSet, a tmpfs on the node: it survives agent restarts and
upgrades, not a node reboot, which restarts the containers anyway): session
uid → :meth:`Baselines.snapshot`. Written whole (temp file + rename) after a
window taught something, only for the sessions served then. A missing or
unreadable file means relearning, never a failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


def load(*, path: Path) -> dict[str, dict[str, Any]]:
    """Session uid → snapshot; empty when there is no usable file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("baseline file %s unreadable, relearning: %s", path, err)
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        log.warning("baseline file %s has an unknown format, relearning", path)
        return {}
    sessions = data.get("sessions")
    if not isinstance(sessions, dict):
        return {}
    return {str(uid): snap for uid, snap in sessions.items() if isinstance(snap, dict)}


def save(*, path: Path, sessions: Mapping[str, Mapping[str, Any]]) -> bool:
    """Replace the file with ``sessions``; False (logged) when it cannot be written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": VERSION, "sessions": sessions}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        log.warning("cannot save baselines to %s: %s", path, err)
        return False
    return True


def remove(*, path: Path) -> None:
    """No session learns here any more: drop the file (and the agent's directory if empty)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        log.warning("cannot remove %s: %s", path, err)
        return
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # fails while other state (tc.json) lives there
