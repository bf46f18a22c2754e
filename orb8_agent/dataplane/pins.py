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
from collections.abc import Collection
from pathlib import Path

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
