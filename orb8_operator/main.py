"""``orb8-operator``: run the kopf operator, cluster-wide unless namespaces are given.

Credentials come from the in-cluster service account, else $KUBECONFIG or
~/.kube/config (kopf's own login and the kubernetes_asyncio client both follow
that order). A liveness endpoint answers on ``--liveness``; Prometheus metrics
are served on ``--metrics-port``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence

import kopf
from kopf._core.engines.peering import Identity  # kopf.run's type; not re-exported

from orb8_common.cli import OneLineParser, http_url, load_credentials
from orb8_common.errors import UsageError
from orb8_operator.selectors import CROSS_NAMESPACE_ENV, CrossNamespacePolicy

__all__ = ["main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="orb8-operator", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--liveness",
        type=http_url,
        default=os.environ.get("ORB8_LIVENESS_ENDPOINT", "http://0.0.0.0:8080/healthz"),
        help="liveness endpoint URL (default: %(default)s)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="serve sessions only in this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--session-resync",
        type=_seconds,
        default=300.0,
        help="longest wait before the resync loop looks at an active session again; report, "
        "spec and pod changes, a deadline and a report turning stale are looked at sooner "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--node-config-resync",
        type=_seconds,
        default=30.0,
        help="seconds between full NodeAgentConfig checks; changes are written at once "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--allow-cross-namespace",
        action="append",
        default=[],
        metavar="FROM:TO",
        help="let sessions in namespace FROM select pods in namespace TO (repeatable; '*' for"
        " any, e.g. monitoring:*). Default: a session selects pods only in its own namespace",
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="address for /metrics (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8081,
        help="port for Prometheus /metrics; 0 turns it off (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--peering",
        action="store_true",
        help="coordinate with other operator replicas through kopf peering (needs its CRD)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        policy = CrossNamespacePolicy.parse(rules=args.allow_cross_namespace)
    except UsageError as err:
        parser.error(str(err))
    try:
        # kopf would retry a bad kubeconfig every minute with a traceback; say it once.
        asyncio.run(load_credentials(kubeconfig=None))
    except UsageError as err:
        print(f"orb8-operator: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs every handler run; the status cache handler runs on every session write.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    os.environ["ORB8_SESSION_RESYNC_S"] = str(args.session_resync)
    os.environ["ORB8_NODE_CONFIG_RESYNC_S"] = str(args.node_config_resync)
    os.environ[CROSS_NAMESPACE_ENV] = policy.to_env()
    if policy.rules:
        logging.getLogger("orb8_operator").info(
            "cross-namespace selection allowed: %s", policy.to_env()
        )
    # Importing registers the handlers with kopf's default registry.
    from orb8_operator import handlers  # noqa: F401
    from orb8_operator.metrics import metrics, serve

    if args.metrics_port:
        try:
            serve(host=args.metrics_host, port=args.metrics_port, metrics=metrics())
        except OSError as err:
            print(
                f"orb8-operator: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
                f"{err.strerror or err} (pick another --metrics-port, or 0 to turn it off)",
                file=sys.stderr,
            )
            return 1

    # Cluster-scoped kinds (nodes, NodeAgentConfigs) are watched cluster-wide either way.
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=not args.peering,
        liveness_endpoint=args.liveness,
        # kopf's default identity asks the passwd database for the user name,
        # which raises in containers running as a uid with no passwd entry
        # (the image's 65532, OpenShift's random uids).
        identity=Identity(f"orb8-operator@{socket.gethostname()}"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
