"""orb8_dev.reliability: rows the fault tests append, rendered into docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

from orb8_dev import reliability


def test_latest_row_per_fault_is_rendered_between_the_markers(tmp_path: Path) -> None:
    results = tmp_path / "reliability.jsonl"
    reliability.record(fault="apiserver", asserted="old", recovery_s=9.123, path=results)
    reliability.record(fault="soak", asserted="flat", recovery_s=None, path=results)
    reliability.record(fault="apiserver", asserted="new", recovery_s=1.5, path=results)
    reliability.record(fault="agent kill", asserted="a", recovery_s=3.456, ready_s=0.814,
                       path=results)  # fmt: skip
    reliability.record(fault="operator kill", asserted="b", recovery_s=2.0, ready_s=-0.25,
                       path=results)  # fmt: skip
    doc = tmp_path / "reliability.md"
    doc.write_text(f"# head\n\n{reliability.BEGIN}\nstale\n{reliability.END}\n\ntail\n")
    reliability.render(results=results, doc=doc)
    text = doc.read_text()
    assert text.startswith("# head\n") and text.endswith("\ntail\n") and "stale" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0:3] for r in rows[1:]] == [
        ["| apiserver", "new", "1.5 s"],
        ["| soak", "flat", "n/a"],
        ["| agent kill", "a", "3.46 s from the restart; 0.81 s after its /readyz 200"],
        ["| operator kill", "b", "2.0 s from the restart; 0.25 s before its /readyz 200"],
    ]
    assert all(" cores)" in r for r in rows[1:]), rows  # the load the figures were taken under
