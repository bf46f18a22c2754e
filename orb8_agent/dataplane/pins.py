"""Where a probe pins its maps, and the two rules every probe follows there.

An agent pins under ``<pin dir>/<agent id>/`` (the chart mounts the host's
bpffs at ``/sys/fs/bpf/orb8``), one file per map, named ``<map>_v<layout>``:
the layout version is bumped whenever a key or value changes shape, so a
map pinned by another layout is never reused (and so never misread).
Several probes share the directory (flows4_v2/flows6_v2, tcp_health,
dns_rows_v1/dns_inflight_v1), so:

* a probe drops only pins that carry its own prefix but not its current
  names (:func:`drop_foreign_layouts`), never another probe's;
* a clean close removes only its own pins, and the directory once it is
  empty (:func:`unpin`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from pathlib import Path

from orb8_common.errors import ProbeLoadError

LOG = logging.getLogger(__name__)


def drop_foreign_layouts(*, directory: Path | None, prefix: str, keep: Collection[str]) -> None:
    """Remove pins in ``directory`` named ``prefix…`` that are not in ``keep``.

    Their keys and values have another shape: read with this layout they
    would be misread, so they are dropped (a version change loses at most
    one unreported interval) and the maps are created afresh.
    """
    if directory is None or not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.name.startswith(prefix) and path.name not in keep:
            LOG.warning("dropping %s: a map pinned by another layout", path)
            with contextlib.suppress(OSError):
                path.unlink()


def unpin(*, directory: Path | None, names: Collection[str]) -> None:
    """Remove this probe's pins, and ``directory`` if no other probe's are left in it."""
    if directory is None:
        return
    for name in names:
        (directory / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


def load_reusing(
    *, directory: Path | None, names: Collection[str], load: Callable[[Path | None], None],
    what: str,
) -> Path | None:  # fmt: skip
    """``load(directory)``, reusing the maps pinned there; returns where they are pinned.

    A pinned map the object cannot reuse (its size changed) is dropped and the
    load tried again; with no usable bpffs the probe runs unpinned (None), and
    what is not reported yet then dies with the process.
    """
    try:
        load(directory)
        return directory
    except (ProbeLoadError, OSError) as err:
        if directory is None:
            raise
        pinned = [directory / name for name in names]
        if any(p.exists() for p in pinned):
            for p in pinned:
                p.unlink(missing_ok=True)
            with contextlib.suppress(ProbeLoadError, OSError):
                load(directory)
                return directory
        LOG.warning("%s not pinned at %s (%s); running without", what, directory, err)
        load(None)
        return None
