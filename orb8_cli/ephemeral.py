"""``orb8 trace network|syscalls|dns --pod NS/POD``: trace one pod of a cluster without orb8.

From a workstation, with only the kubeconfig's rights (docs/cli.md lists
them as a Role):

1. read the target pod: its node, uid and running containers' ids;
2. create a short-lived privileged pod from the orb8-agent image, pinned to
   that node (``spec.nodeName``), with the host's PID and network namespaces
   and the host's cgroup v2 tree; it runs ``orb8 trace … --local`` aimed at
   the target's cgroups and host veth (``orb8_cli.podtarget``);
3. follow its log until the trace prints its one result line, render that
   here exactly as a local trace would;
4. delete the pod and wait until it is gone: also on Ctrl-C or SIGTERM, which
   first ask the pod to stop early (its orb8 catches SIGTERM, detaches its
   probes and still prints what it saw).

The pod's ``activeDeadlineSeconds`` bounds its life if this process is killed
outright; it is then left as a finished pod with the label
``app.kubernetes.io/managed-by=orb8-trace``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from orb8_cli.kube import core_api, current_namespace
from orb8_common.errors import ClusterUnavailableError, Orb8Error, UsageError

RESULT_PREFIX = "ORB8-TRACE-RESULT"
# What the trace in the pod says once its probe is live (relayed to the user).
PROBE_ATTACHED = "probe attached"
# Probes that trace the pod's host-side veth (a hostNetwork pod has none).
VETH_PROBES = frozenset({"network", "dns"})
MANAGED_BY = "orb8-trace"
DEFAULT_IMAGE_REPO = "ghcr.io/orb8/orb8-agent"
GRACE_SECONDS = 30
GONE_TIMEOUT = 90.0
# Waiting reasons after which the container will not start by itself.
_STUCK = frozenset({
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})  # fmt: skip


class EphemeralTraceError(Orb8Error):
    """The trace pod could not be started, or its trace failed."""


class _Terminated(BaseException):
    """SIGTERM, turned into an exception like SIGINT's KeyboardInterrupt."""


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    node: str
    container_ids: tuple[str, ...]
    host_network: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("with --pod (ephemeral trace)")
    group.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")
    group.add_argument(
        "--image", help=f"the orb8-agent image (default: {DEFAULT_IMAGE_REPO}:<this version>)"
    )
    group.add_argument(
        "--image-pull-policy", choices=("Always", "IfNotPresent", "Never"), default="IfNotPresent"
    )
    group.add_argument(
        "--trace-namespace", metavar="NS",
        help="where the trace pod runs (default: the target's namespace); it must allow "
        "privileged pods",
    )  # fmt: skip
    group.add_argument(
        "--node-cgroup-root", default="/sys/fs/cgroup", metavar="PATH",
        help="the node's cgroup v2 mount (as the chart's agent.hostCgroupRoot)",
    )  # fmt: skip
    group.add_argument(
        "--start-timeout", default="2m", metavar="D",
        help="give up when the trace pod has not started after this long",
    )  # fmt: skip


def parse_target(text: str) -> tuple[str | None, str]:
    """``NS/NAME`` or ``NAME`` (namespace None: the context's)."""
    namespace, _, name = text.strip().rpartition("/")
    if not name or "/" in namespace or (text.count("/") == 1 and not namespace):
        raise UsageError(f"invalid pod {text!r}; use NAMESPACE/NAME or NAME")
    return namespace or None, name


def run(*, args: argparse.Namespace, probe: str, duration: float) -> int:
    """Run the trace in a pod on the target's node; 0 when a result was printed."""
    from orb8_cli.durations import parse_cli_duration

    start_timeout = parse_cli_duration(args.start_timeout, allow_zero=False)
    given_namespace, name = parse_target(args.pod)
    namespace = given_namespace or current_namespace(kubeconfig=args.kubeconfig)
    core = core_api(kubeconfig=args.kubeconfig)
    target = read_target(core=core, namespace=namespace, name=name)
    if probe in VETH_PROBES and target.host_network:
        raise UsageError(f"pod {namespace}/{name} uses the host's network: it has no veth to trace")
    manifest = pod_manifest(
        target=target, image=args.image or f"{DEFAULT_IMAGE_REPO}:{dist_version('orb8')}",
        pull_policy=args.image_pull_policy, namespace=args.trace_namespace or namespace,
        command=in_pod_command(args=args, probe=probe, duration=duration, target=target),
        cgroup_root=args.node_cgroup_root,
        deadline=math.ceil(duration + start_timeout + 2 * GRACE_SECONDS),
    )  # fmt: skip
    try:
        with _sigterm_raises():
            return _lifecycle(
                core=core, manifest=manifest, target=target, probe=probe, args=args,
                start_timeout=start_timeout, duration=duration,
            )  # fmt: skip
    except _Terminated:
        return 128 + signal.SIGTERM


def read_target(*, core: client.CoreV1Api, namespace: str, name: str) -> Target:
    pod = _call(
        lambda: core.read_namespaced_pod(name, namespace, _request_timeout=15),
        what=f"reading pod {namespace}/{name}", missing=f"pod {namespace}/{name} not found",
    )  # fmt: skip
    node = pod.spec.node_name
    if not node:
        raise EphemeralTraceError(f"pod {namespace}/{name} is not scheduled to a node yet")
    ids = tuple(
        s.container_id for s in (pod.status.container_statuses or [])
        if s.container_id and s.state is not None and s.state.running is not None
    )  # fmt: skip
    if not ids:
        raise EphemeralTraceError(f"pod {namespace}/{name} has no running container")
    return Target(namespace=namespace, name=name, node=node, container_ids=ids,
                  host_network=bool(pod.spec.host_network))  # fmt: skip


def in_pod_command(
    *, args: argparse.Namespace, probe: str, duration: float, target: Target
) -> list[str]:
    command = [
        "orb8", "trace", probe, "--local", "--duration", str(float(duration)),
        "--result-prefix", RESULT_PREFIX, "--cgroup-root", "/host/cgroup",
    ]  # fmt: skip
    for cid in target.container_ids:
        command += ["--target-container", cid]
    if probe == "network":
        for flag in ("protocol", "port", "direction"):
            if getattr(args, f"filter_{flag}", None) is not None:
                command += [f"--{flag}", str(getattr(args, f"filter_{flag}"))]
    if probe in VETH_PROBES:
        if args.top:
            command += ["--top", str(args.top)]
        for port in getattr(args, "kernel_port", ()):
            command += ["--kernel-port", str(port)]
        for cidr in getattr(args, "kernel_cidr", ()):
            command += ["--kernel-cidr", cidr]
    else:
        for name in args.alert:
            command += ["--alert", name]
        command += ["--hook", args.hook]
    return command


def pod_manifest(
    *, target: Target, image: str, pull_policy: str, namespace: str, command: list[str],
    cgroup_root: str, deadline: int,
) -> dict[str, Any]:  # fmt: skip
    def host_path(name: str, path: str, kind: str) -> dict[str, Any]:
        return {"name": name, "hostPath": {"path": path, "type": kind}}

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "orb8-trace-",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "orb8-trace",
                       "app.kubernetes.io/managed-by": MANAGED_BY},
            "annotations": {"orb8.io/trace-target": f"{target.namespace}/{target.name}"},
        },
        "spec": {
            "nodeName": target.node,  # the target's node, no scheduler involved
            "restartPolicy": "Never",
            # Ends the pod by itself if the CLI is killed outright.
            "activeDeadlineSeconds": deadline,
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            # Host PID namespace: cgroup.procs lists host pids, and the target's
            # network namespace is reached through /proc/<pid>/ns/net.
            "hostPID": True,
            # Host network namespace: the target's host-side veth lives there.
            "hostNetwork": True,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "trace",
                "image": image,
                "imagePullPolicy": pull_policy,
                "command": command,
                # bpf(2), tc, tracepoints and setns(2): the agent's capability
                # list; a one-off pod takes privileged for simplicity.
                "securityContext": {"privileged": True, "runAsUser": 0},
                "volumeMounts": [
                    {"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": True},
                    {"name": "cgroup", "mountPath": "/host/cgroup", "readOnly": True},
                    # tc state: a later run removes filters a killed one left.
                    {"name": "run", "mountPath": "/run/orb8"},
                ],
            }],
            "volumes": [
                host_path("btf", "/sys/kernel/btf", "Directory"),
                host_path("cgroup", cgroup_root, "Directory"),
                host_path("run", "/run/orb8", "DirectoryOrCreate"),
            ],
        },
    }  # fmt: skip


def _lifecycle(
    *, core: client.CoreV1Api, manifest: dict[str, Any], target: Target, probe: str,
    args: argparse.Namespace, start_timeout: float, duration: float,
) -> int:  # fmt: skip
    namespace = manifest["metadata"]["namespace"]
    body: Any = manifest  # the client takes a plain dict as well as a V1Pod
    created = _call(
        lambda: core.create_namespaced_pod(namespace, body, _request_timeout=30),
        what=f"creating the trace pod in namespace {namespace}",
        missing=f"namespace {namespace} not found",
    )
    name = created.metadata.name
    _say(f"tracing {target.namespace}/{target.name} on node {target.node} for "
         f"{duration:g}s from pod {namespace}/{name}")  # fmt: skip
    result: dict[str, Any] | None = None
    notes: list[str] = []
    interrupted = False
    deleting = False
    try:
        try:
            _wait_started(core=core, namespace=namespace, name=name, timeout=start_timeout)
            result = _follow_log(core=core, namespace=namespace, name=name, notes=notes,
                                 read_timeout=duration + 4 * GRACE_SECONDS)  # fmt: skip
            code = _exit_code(core=core, namespace=namespace, name=name)
            if code not in (0, None) or result is None:
                raise EphemeralTraceError(f"the trace pod failed: {failure_reason(notes, code)}")
        except (KeyboardInterrupt, _Terminated):
            interrupted = True
            _say(f"interrupted: stopping the trace pod {namespace}/{name}")
            # Attach to its log first: its orb8 gets SIGTERM, detaches, prints what it saw
            # and exits, and the pod may be gone before a log request made after the
            # delete arrives (or the pod's Running status had not reached us yet).
            log = None
            with contextlib.suppress(KeyboardInterrupt, _Terminated, Orb8Error):
                log = _open_log(core=core, namespace=namespace, name=name,
                                read_timeout=2 * GRACE_SECONDS)  # fmt: skip
            try:
                _delete(core=core, namespace=namespace, name=name, grace=GRACE_SECONDS)
            except BaseException:
                if log is not None:
                    log.release_conn()
                raise
            deleting = True
            with contextlib.suppress(KeyboardInterrupt, _Terminated, Orb8Error):
                result = (
                    _read_log(response=log, namespace=namespace, name=name, notes=notes)
                    if log is not None
                    else _follow_log(core=core, namespace=namespace, name=name, notes=notes,
                                     read_timeout=2 * GRACE_SECONDS)
                )  # fmt: skip
    finally:
        with _signals_blocked():
            if not deleting:
                _delete(core=core, namespace=namespace, name=name, grace=GRACE_SECONDS)
            gone = _wait_gone(core=core, namespace=namespace, name=name, timeout=GONE_TIMEOUT)
            if not gone:
                _delete(core=core, namespace=namespace, name=name, grace=0)
                gone = _wait_gone(core=core, namespace=namespace, name=name, timeout=30)
            _say(f"removed pod {namespace}/{name}" if gone
                 else f"pod {namespace}/{name} is still terminating")  # fmt: skip
    if result is None:
        return 130 if interrupted else 1
    _print_result(result=result, probe=probe, output=args.output)
    return 0


def failure_reason(notes: list[str], code: int | None) -> str:
    """The pod's last line that is not its "probe attached" notice, else its exit code."""
    for note in reversed(notes):
        if PROBE_ATTACHED not in note:
            return note.removeprefix("orb8: ")
    return f"exit code {code}"


def _print_result(*, result: dict[str, Any], probe: str, output: str) -> None:
    from orb8_cli.dns import print_dns
    from orb8_cli.trace import print_flows, print_syscalls

    if probe == "network":
        print_flows(rows=result.get("flows") or [], output=output,
                    summary=str(result.get("summary", "")))  # fmt: skip
    elif probe == "dns":
        print_dns(rows=result.get("rows") or [], output=output,
                  summary=str(result.get("summary", "")),
                  where=",".join(result.get("interfaces") or []))  # fmt: skip
    else:
        doc = {k: v for k, v in result.items() if k != "probe"}
        print_syscalls(doc=doc, output=output)


def _wait_started(*, core: client.CoreV1Api, namespace: str, name: str, timeout: float) -> None:
    """Until the trace container runs or has ended; one-line errors when it cannot start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        remaining = max(1, int(deadline - time.monotonic()))
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
            timeout_seconds=remaining, _request_timeout=(10, remaining + 15),
        )  # fmt: skip
        try:
            for event in stream:
                if _started(event["object"]):
                    return
        except (ApiException, HTTPError, OSError):
            continue  # the watch broke: start another one
    raise EphemeralTraceError(f"the trace pod {namespace}/{name} did not start in {timeout:g}s")


def _started(pod: client.V1Pod) -> bool:
    if pod.status is None:
        return False
    if pod.status.phase in ("Running", "Succeeded", "Failed"):
        return True
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in _STUCK:
            raise EphemeralTraceError(
                f"the trace pod cannot start its container: {waiting.reason}: {waiting.message}"
            )
    return False


def _follow_log(
    *, core: client.CoreV1Api, namespace: str, name: str, notes: list[str], read_timeout: float
) -> dict[str, Any] | None:
    """Stream the pod's log to its end; the result line parsed, other lines kept as notes."""
    response = _open_log(core=core, namespace=namespace, name=name, read_timeout=read_timeout)
    return _read_log(response=response, namespace=namespace, name=name, notes=notes)


def _open_log(*, core: client.CoreV1Api, namespace: str, name: str, read_timeout: float) -> Any:
    """The trace container's log stream, followed from its first line."""
    return _call(
        lambda: core.read_namespaced_pod_log(
            name, namespace, container="trace", follow=True, _preload_content=False,
            _request_timeout=(10, read_timeout),
        ),
        what=f"reading the log of {namespace}/{name}", missing=f"pod {namespace}/{name} is gone",
    )  # fmt: skip


def _read_log(
    *, response: Any, namespace: str, name: str, notes: list[str]
) -> dict[str, Any] | None:
    """Read an opened log stream to its end (see :func:`_follow_log`)."""
    result: dict[str, Any] | None = None
    try:
        pending = b""
        for chunk in response.stream(4096):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                result = _take_line(raw.decode(errors="replace"), notes) or result
        if pending:
            result = _take_line(pending.decode(errors="replace"), notes) or result
    except (HTTPError, OSError) as err:
        raise ClusterUnavailableError(f"log stream of {namespace}/{name} broke: {err}") from err
    finally:
        response.release_conn()
    return result


def _take_line(line: str, notes: list[str]) -> dict[str, Any] | None:
    if line.startswith(RESULT_PREFIX + " "):
        doc = json.loads(line[len(RESULT_PREFIX) + 1 :])
        return doc if isinstance(doc, dict) else None
    if line.strip():
        notes.append(line.strip())
        print(f"[trace pod] {line}", file=sys.stderr, flush=True)
    return None


def _exit_code(*, core: client.CoreV1Api, namespace: str, name: str) -> int | None:
    """The container's exit code once it has ended (watching until it has)."""
    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
        core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
        timeout_seconds=60, _request_timeout=(10, 75),
    )  # fmt: skip
    for event in stream:
        for status in event["object"].status.container_statuses or []:
            if status.state and status.state.terminated is not None:
                return int(status.state.terminated.exit_code)
    return None


def _delete(*, core: client.CoreV1Api, namespace: str, name: str, grace: int) -> None:
    with contextlib.suppress(ApiException, HTTPError, OSError):
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace,
                                   _request_timeout=15)  # fmt: skip


def _wait_gone(*, core: client.CoreV1Api, namespace: str, name: str, timeout: float) -> bool:
    """True once the pod no longer exists (watched, not polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pods = core.list_namespaced_pod(
                namespace, field_selector=f"metadata.name={name}", _request_timeout=15
            )
            if not pods.items:
                return True
            remaining = max(1, int(deadline - time.monotonic()))
            for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                resource_version=pods.metadata.resource_version if pods.metadata else None,
                timeout_seconds=remaining,
                _request_timeout=(10, remaining + 15),
            ):  # fmt: skip
                if event["type"] == "DELETED":
                    return True
        except (ApiException, HTTPError, OSError):
            continue
    return False


def _call(func: Any, *, what: str, missing: str) -> Any:
    try:
        return func()
    except ApiException as err:
        if err.status == 404:
            raise EphemeralTraceError(missing) from err
        raise EphemeralTraceError(f"{what}: {err.status} {_reason(err)}") from err
    except (HTTPError, OSError) as err:
        raise ClusterUnavailableError(f"cannot reach the cluster: {err}") from err


def _reason(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or err.reason).replace("\n", " ")


def _say(line: str) -> None:
    print(f"orb8: {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Clean-up runs to its end: Ctrl-C and SIGTERM wait until it has."""
    signals = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
