"""Fault-test results: each fault test appends a row; ``render`` writes the table.

Rows land in build/reliability.jsonl (one JSON object a line) as the tests
run; ``python -m orb8_dev.reliability`` turns the latest row per fault into
the table between the markers in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from orb8_dev.controlplane import REPO_ROOT

RESULTS = REPO_ROOT / "build" / "reliability.jsonl"
DOC = REPO_ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def record(
    *, fault: str, asserted: str, recovery_s: float | None, ready_s: float | None = None,
    path: Path = RESULTS,
) -> None:  # fmt: skip
    """Append one measured result.

    ``recovery_s``: seconds from recovery (the server back, the process
    restarted) to results resuming. ``ready_s``, for a restarted process:
    seconds from its /readyz first answering 200 to results resuming (the
    restart figure includes the interpreter's start-up; negative when the
    results came first).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {
        "fault": fault, "asserted": asserted,
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "ready_s": None if ready_s is None else round(ready_s, 2),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": f"{platform.machine()}, {platform.release()}",
        # the machine's 1-minute load average and cores: recovery times grow with load
        "load": f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
    }  # fmt: skip
    with path.open("a") as out:
        out.write(json.dumps(row) + "\n")


def table(*, rows: Sequence[dict[str, object]]) -> str:
    """A markdown table of the latest row per fault, in first-seen order."""
    latest: dict[str, dict[str, object]] = {}
    for row in rows:
        latest[str(row["fault"])] = row
    lines = [
        "| Fault | Asserted | Results resume after recovery | Measured |",
        "|---|---|---|---|",
    ]
    for row in latest.values():
        shown = _resumed(recovery_s=row.get("recovery_s"), ready_s=row.get("ready_s"))
        load = f", load {row['load']}" if row.get("load") else ""
        lines.append(
            f"| {row['fault']} | {row['asserted']} | {shown} | {row['at']} ({row['host']}{load}) |"
        )
    return "\n".join(lines)


def _resumed(*, recovery_s: object, ready_s: object) -> str:
    if recovery_s is None:
        return "n/a"
    if not isinstance(ready_s, int | float):
        return f"{recovery_s} s"
    after = f"{ready_s} s after" if ready_s >= 0 else f"{-ready_s} s before"
    return f"{recovery_s} s from the restart; {after} its /readyz 200"


def render(*, results: Path = RESULTS, doc: Path = DOC) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    text = doc.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}\n{table(rows=rows)}\n{END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orb8_dev.reliability", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"no results in {args.results}: run the fault tests first (make test)")
        return 1
    render(results=args.results, doc=args.doc)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
