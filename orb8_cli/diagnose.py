"""``orb8 diagnose``: can this machine run orb8's probes? Each failure has a remedy."""

from __future__ import annotations

import argparse
import json
from typing import Any

from orb8_agent.preflight import run_preflight
from orb8_cli.humanize import table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diagnose", help="check kernel, BTF, mounts, capabilities, probes"
    )
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    parser.add_argument(
        "--no-mount", action="store_true", help="do not mount bpffs/tracefs when they are missing"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = run_preflight(mount=not args.no_mount)
    if args.output == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        rows = [["ok" if c.ok else "FAIL", c.name, c.message, c.remedy] for c in report.checks]
        rows += [
            ["ok" if p.loadable else "FAIL", f"probe {p.name}", p.message or "loads", ""]
            for p in report.probes
        ]
        print(table(headers=["", "CHECK", "RESULT", "REMEDY"], rows=rows))
    return 0 if report.ok else 1
