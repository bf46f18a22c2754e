"""The Helm CLI the tests and tooling use: built once by hack/helm/build.sh,
run with its own config, cache and data directories."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "orb8"
HELM_BUILD = REPO / "hack" / "helm" / "build.sh"


@dataclass(frozen=True)
class Helm:
    """The helm binary plus a private HELM_*_HOME."""

    binary: Path
    home: Path

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, input=input,
            timeout=timeout, check=False,
        )  # fmt: skip


def find_helm(*, home: Path) -> Helm:
    """Build helm if it is not cached yet (hack/helm/build.sh), and return it."""
    built = subprocess.run(
        ["bash", str(HELM_BUILD)], stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    return Helm(binary=Path(built.strip().splitlines()[-1]) / "helm", home=home)
