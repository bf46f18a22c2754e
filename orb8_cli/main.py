"""Entry point of the ``orb8`` command (and the ``kubectl orb8`` plugin).

Each sub-command lives in its own module that exposes
``register(subparsers) -> None``; the parser it adds sets ``func`` to a
callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from orb8_common.errors import Orb8Error, UsageError

# Modules that add sub-commands, in the order `orb8 --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "orb8_cli.get",
    "orb8_cli.top",
    "orb8_cli.version",
    "orb8_cli.trace",
    "orb8_cli.diagnose",
)

EXIT_ERROR = 1
EXIT_USAGE = 2

# Options whose value may look like an option ("-d -5s"): argparse would say
# "expected one argument"; bound to the option, the value reaches its own check.
_VALUE_OPTIONS = frozenset({"--duration", "-d", "--top", "--interval", "--port"})


def _bind_dashed_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if arg in _VALUE_OPTIONS and len(nxt) > 1 and nxt[0] == "-" and nxt[1].isdigit():
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


class _Parser(argparse.ArgumentParser):
    """argparse parser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orb8", description="eBPF observability for Kubernetes")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(_bind_dashed_values(sys.argv[1:] if argv is None else argv))
        func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return func(args)
    except UsageError as err:
        print(f"orb8: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Orb8Error as err:
        print(f"orb8: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``orb8 get flows -w | head``): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
