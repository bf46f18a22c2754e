"""User mistakes on the command line end in one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orb8_cli.main import main

ORB8 = [sys.executable, "-m", "orb8_cli.main"]


@pytest.mark.parametrize(
    "content",
    ["just some text\n", "[1, 2, 3]\n", "clusters: 5\n", "apiVersion: v1\nkind: Pod\n", ""],
    ids=["text", "list", "wrong-types", "other-object", "empty"],
)
def test_a_file_that_is_not_a_kubeconfig_is_one_line(content: str, tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text(content)
    done = subprocess.run(
        [*ORB8, "get", "flows", "checkout-debug"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECONFIG": str(bad), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"orb8: cannot load kubeconfig {bad}")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trace", "network", "--local", "--duration", "-5s"], "must not be negative"),
        (["trace", "network", "--local", "-d", "-5s"], "must not be negative"),
        (["trace", "network", "--local", "-d=-1m"], "must not be negative"),
        (["trace", "network", "--local", "--top", "-3"], "--top"),
    ],
)
def test_negative_values_are_named_not_argparse_noise(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert "expected one argument" not in err
