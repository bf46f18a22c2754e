"""``make cluster-up`` / ``cluster-down``: a local cluster in a state directory.

    python -m orb8_dev.cluster up [--sim] [--state-dir DIR]
    python -m orb8_dev.cluster down|status|apply-crds [--state-dir DIR]

``up`` starts a real node by default (kubelet, containerd, controller-manager,
scheduler, see ``orb8_dev/node.py``); ``--sim`` starts only etcd and the
apiserver on loopback, for the simulated nodes of ``orb8_dev/kubelet.py``.
``down`` stops whichever is running and restores the host.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from orb8_common.errors import Orb8Error
from orb8_dev import controlplane, node
from orb8_dev.controlplane import CRD_DIR, ControlPlane


def _print_env(plane: ControlPlane) -> None:
    print(f"export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
    print(f"export PATH={plane.bin_dir}:$PATH   # kubectl {plane.version()}", file=sys.stderr)
    print(plane.kubeconfig)


def _up(*, state_dir: Path, sim: bool) -> int:
    running_node = node.attach(state_dir=state_dir)
    plane = running_node.plane if running_node else controlplane.attach(state_dir=state_dir)
    if plane is not None and (running_node is not None) == (not sim):
        print(f"cluster already running at {plane.server}", file=sys.stderr)
        _print_env(plane)
        return 0
    started = time.monotonic()
    if sim:
        node.down(state_dir=state_dir)
        plane = controlplane.start(state_dir=state_dir)
        print(
            f"control plane: kube-apiserver {plane.version()} ready at {plane.server} "
            f"in {time.monotonic() - started:.1f}s (logs: {state_dir / 'logs'})",
            file=sys.stderr,
        )
    else:
        local = node.up(state_dir=state_dir)
        plane = local.plane
        print(
            f"cluster: node {local.name} Ready in {time.monotonic() - started:.1f}s "
            f"(logs: {state_dir / 'logs'})",
            file=sys.stderr,
        )
    _print_env(plane)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orb8_dev.cluster", description=__doc__)
    parser.add_argument("action", choices=("up", "down", "status", "apply-crds"))
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("ORB8_STATE", "/tmp/orb8-dev"))
    )
    parser.add_argument(
        "--sim", action="store_true", help="API server only (no kubelet): simulated nodes"
    )
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    try:
        if args.action == "down":
            node.down(state_dir=state_dir, progress=True)
            print(f"cluster in {state_dir} stopped", file=sys.stderr)
            return 0
        if args.action == "up":
            return _up(state_dir=state_dir, sim=args.sim)
        running = node.attach(state_dir=state_dir)
        plane = running.plane if running else controlplane.attach(state_dir=state_dir)
        if args.action == "status":
            shape = "real node" if running else "API only"
            print(f"running ({shape}) at {plane.server}" if plane else "stopped")
            return 0 if plane else 1
        if plane is None:
            print("cluster: not running; run `make cluster-up` first", file=sys.stderr)
            return 1
        plane.apply_crds()
        print(f"CRDs from {CRD_DIR} established", file=sys.stderr)
        return 0
    except Orb8Error as err:
        print(f"cluster: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
