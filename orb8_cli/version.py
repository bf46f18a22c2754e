"""``orb8 version``: print the installed version."""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version as dist_version
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("version", help="print the orb8 version")
    parser.add_argument("--output", "-o", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    installed = dist_version("orb8")
    print(json.dumps({"version": installed}) if args.output == "json" else f"orb8 {installed}")
    return 0
