"""Kubeconfigs that act as a ServiceAccount, so a process (the operator, a
stand-in agent) runs with exactly the permissions the chart's RBAC grants."""

from __future__ import annotations

import json
from pathlib import Path

from orb8_dev.controlplane import ControlPlane


def kubeconfig_for(
    *, plane: ControlPlane, namespace: str, name: str, path: Path, duration: str = "2h"
) -> Path:
    """Write a kubeconfig holding a TokenRequest token of ``namespace/name``."""
    token = plane.kubectl(
        "create", "token", name, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "orb8-dev",
                "cluster": {"server": plane.server, "certificate-authority": str(plane.ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "orb8-dev", "user": user}}],
        "current-context": name,
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path
