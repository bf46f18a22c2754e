"""``orb8-agent``: the per-node agent (run by the DaemonSet, one per node)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from orb8_agent.control.agent import NodeAgent
from orb8_agent.control.gpu_sessions import GpuSessions
from orb8_agent.control.kernel import KernelDataPlane
from orb8_agent.dataplane.cgroupfs import cgroup2_mount
from orb8_agent.dataplane.probes import ProbeSet, start_probes
from orb8_agent.dataplane.syscalls import Hook
from orb8_agent.dataplane.tc import DEFAULT_RUN_DIR
from orb8_agent.gpu.podresources.client import DEFAULT_SOCKET
from orb8_agent.podmetrics import DEFAULT_MAX_PODS, PodMetrics
from orb8_agent.preflight import run_preflight
from orb8_agent.runner import AgentRunner
from orb8_common.cli import OneLineParser, load_credentials, port
from orb8_common.errors import Orb8Error, UsageError

log = logging.getLogger("orb8.agent")
DEFAULT_PIN = "/sys/fs/bpf/orb8"
_BIND_ERRORS = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}
PROBES = ("flows", "syscalls", "tcp", "dns")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _probe_list(text: str) -> tuple[str, ...]:
    if text.strip() == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = sorted(set(names) - set(PROBES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown probe(s) {', '.join(unknown) or text!r}: "
            "use flows, syscalls, tcp, dns or none"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="orb8-agent", description=__doc__)
    parser.add_argument(
        "--node", default=os.environ.get("NODE_NAME"),
        help="this node's name (default: $NODE_NAME, set from the downward API)",
    )  # fmt: skip
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"),
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster)",
    )  # fmt: skip
    parser.add_argument(
        "--cgroup-root", type=Path, default=None,
        help="cgroup v2 directory holding kubepods (default: the cgroup2 mount)",
    )  # fmt: skip
    parser.add_argument("--http-host", default="0.0.0.0", help="address for /metrics and probes")
    parser.add_argument(
        "--http-port", type=port, default=9091,
        help="port for /metrics, /healthz and /readyz (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-max-pods", type=_non_negative, default=DEFAULT_MAX_PODS,
        help="pods with series of their own in /metrics; the rest are summed into "
        'pod="_other" (default: %(default)s)',
    )  # fmt: skip
    parser.add_argument(
        "--probes", type=_probe_list, default=PROBES,
        help="BPF probes to load: a comma-separated subset of flows,syscalls,tcp,dns, or none "
        "(GPU telemetry only); /healthz fails while none of them loads "
        "(default: flows,syscalls,tcp,dns)",
    )  # fmt: skip
    parser.add_argument(
        "--syscall-hook", choices=[h.value for h in Hook], default=Hook.RAW_TP.value
    )
    parser.add_argument(
        "--dcgm-exporter-host", default=os.environ.get("NODE_IP", "127.0.0.1"),
        help="where this node's dcgm-exporter listens (default: $NODE_IP, else 127.0.0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--pod-resources-socket", default=DEFAULT_SOCKET,
        help=f"kubelet pod-resources socket (default: {DEFAULT_SOCKET})",
    )  # fmt: skip
    parser.add_argument(
        "--agent-id", default=None,
        help="names this agent's tc filters and /run/orb8/<id> state (default: agent-<node>)",
    )  # fmt: skip
    parser.add_argument(
        "--bpf-pin-dir", default=os.environ.get("ORB8_BPF_PIN_DIR", DEFAULT_PIN),
        help="bpffs directory where the flow map stays pinned, so flows not yet reported survive "
        "an agent restart ('' to not pin; default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )  # fmt: skip
    return parser


def _load_probes(
    *, agent_id: str, hook: Hook, names: Sequence[str], pin_dir: Path | None
) -> ProbeSet:
    """Load each probe on its own, so one failing never takes the other down."""
    probes = ProbeSet()
    for name in names:
        try:
            loaded = start_probes(
                agent_id=agent_id, flows=name == "flows", syscalls=name == "syscalls",
                tcp=name == "tcp", dns=name == "dns", hook=hook, pin_dir=pin_dir,
                hostflows=name == "flows",  # hostNetwork pods' flows
            )  # fmt: skip
        except Orb8Error as err:
            probes.failures[name] = str(err)
            log.error("%s probe unavailable: %s", name, err)
            continue
        probes.flows = probes.flows or loaded.flows
        probes.syscalls = probes.syscalls or loaded.syscalls
        probes.tcp = probes.tcp or loaded.tcp
        probes.dns = probes.dns or loaded.dns
        probes.hostflows = probes.hostflows or loaded.hostflows
        if "hostflows" in loaded.failures:
            probes.failures["hostflows"] = loaded.failures["hostflows"]
            log.error("hostflows probe unavailable: %s", loaded.failures["hostflows"])
    return probes


async def _run(args: argparse.Namespace) -> int:
    await load_credentials(kubeconfig=args.kubeconfig)
    node: str = args.node
    preflight = run_preflight(mount=True, load_probes=False)
    pin_dir = Path(args.bpf_pin_dir) if args.bpf_pin_dir else None
    probes = _load_probes(
        agent_id=args.agent_id or f"agent-{node}", hook=Hook(args.syscall_hook),
        names=args.probes, pin_dir=pin_dir,
    )  # fmt: skip
    dataplane = KernelDataPlane(probes=probes)
    cgroup_root = args.cgroup_root or cgroup2_mount()
    agent_id = args.agent_id or f"agent-{node}"
    agent = NodeAgent(
        node=node, dataplane=dataplane, cgroup_root=cgroup_root,
        pod_metrics=PodMetrics(max_pods=args.metrics_max_pods, clock=time.time),
        baseline_path=DEFAULT_RUN_DIR / agent_id / "baseline.json",
    )  # fmt: skip
    gpu = GpuSessions(
        node=node, exporter_host=args.dcgm_exporter_host,
        podresources_socket=args.pod_resources_socket,
    )  # fmt: skip
    gpu.metrics.max_pods = args.metrics_max_pods

    def capability_report() -> dict[str, Any]:
        return {**preflight.to_status(), "probes": probes.statuses()}

    async with client.ApiClient() as api_client:
        runner = AgentRunner(
            agent=agent, api=client.CustomObjectsApi(api_client), gpu=gpu,
            capability_report=capability_report, version=dist_version("orb8"),
            probes=probes, wanted_probes=frozenset(args.probes),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        log.info(
            "orb8-agent on node %s: probes %s, cgroup root %s, http %s:%d",
            node, sorted(dataplane.loaded_probes()) or "none", cgroup_root,
            args.http_host, args.http_port,
        )  # fmt: skip
        try:
            await runner.run(http_host=args.http_host, http_port=args.http_port)
        finally:
            dataplane.close()
    log.info("orb8-agent stopped; probes detached")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if not args.node:
            raise UsageError("no node name: pass --node or set NODE_NAME")
        return asyncio.run(_run(args))
    except Orb8Error as err:
        print(f"orb8-agent: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except OSError as err:
        if err.errno not in _BIND_ERRORS:
            raise
        # The metrics/probe server could not listen: a flag or a port clash.
        print(
            f"orb8-agent: cannot serve http on {args.http_host}:{args.http_port}: "
            f"{err.strerror or err}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
