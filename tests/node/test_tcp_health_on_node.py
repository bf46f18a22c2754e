"""TCP health of real pods: the images built here, installed by Helm on the real node.

The oracle is each pod's own network namespace: its TCP MIB, read through
``/proc/<a container pid>/net/snmp`` (procfs shows the namespace of the pid
it names), and what the pod's own ``nc`` saw.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orb8_dev import nodepods, release
from orb8_dev.node import LocalNode
from orb8_dev.nodepods import RunningPod
from orb8_dev.release import Orb8Release

pytestmark = pytest.mark.timeout(1800)

WEB = {"tier": "tcp"}
SINK = "nc -ll -p 8080 -e orb8-sink & " + nodepods.IDLE
CLOSED_PORT = 9
# TCP states in /proc/net/tcp that can still send: anything but LISTEN (0A) and TIME_WAIT (06)
QUIET_STATES = {"0A", "06"}


def wait_for(predicate: Callable[[], Any], *, timeout: float = 120, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def orb8(real_node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orb8Release]:
    archives = release.build_images()
    installed = release.install(
        node=real_node, helm_home=tmp_path_factory.mktemp("helm"), archives=archives
    )
    try:
        yield installed
    finally:
        if installed.pods():
            release.uninstall(release=installed)


def _pid(node: LocalNode, pod: RunningPod) -> int:
    return nodepods.container_pids(node=node, pod=pod)[0]


def _snmp(node: LocalNode, pod: RunningPod) -> dict[str, int]:
    lines = [line.split() for line in
             Path(f"/proc/{_pid(node, pod)}/net/snmp").read_text().splitlines()
             if line.startswith("Tcp:")]  # fmt: skip
    return {n: int(v) for n, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def _quiet(node: LocalNode, *pods: RunningPod) -> bool:
    for pod in pods:
        for family in ("tcp", "tcp6"):
            rows = Path(f"/proc/{_pid(node, pod)}/net/{family}").read_text().splitlines()[1:]
            if any(row.split()[3] not in QUIET_STATES for row in rows):
                return False
    return True


def _status(node: LocalNode, ns: str, name: str) -> dict[str, Any]:
    out = node.plane.kubectl("get", "ts", name, "-n", ns, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status") or {}
    return status


def test_real_pods_retransmits_resets_and_connects_equal_their_own_mib(
    real_node: LocalNode, orb8: Orb8Release
) -> None:
    ns = f"orb8-tcp-{secrets.token_hex(3)}"
    nodepods.create_namespace(node=real_node, name=ns)
    pods = {}
    for name, command in (("server", SINK), ("client", nodepods.IDLE)):
        nodepods.apply(node=real_node, manifest=nodepods.app_pod(
            name=name, namespace=ns, labels=WEB, command=command))  # fmt: skip
        pods[name] = nodepods.wait_running(node=real_node, namespace=ns, name=name)
    server, client = pods["server"], pods["client"]
    session = {
        "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
        "metadata": {"name": "tcp", "namespace": ns},
        "spec": {"selector": {"podSelector": {"matchLabels": WEB}},
                 "probes": {"network": {"enabled": True}}, "reportInterval": "2s"},
    }  # fmt: skip
    real_node.plane.kubectl("apply", "-f", "-", input=json.dumps(session))

    def ready() -> bool:
        nodes = _status(real_node, ns, "tcp").get("nodes") or []
        return any(n.get("state") == "Running" and "tcp" in n.get("probes", []) for n in nodes) \
            and all(nodepods.orb8_tc_filters(interface=nodepods.host_veth(node=real_node, pod=p))
                    for p in (server, client))  # fmt: skip

    wait_for(ready, what="the session Running on the node with the tcp probe")
    before = {p.name: _snmp(real_node, p) for p in (server, client)}

    out = nodepods.exec_in(node=real_node, pod=client, command=(
        f"for i in 1 2 3; do nc -w 5 {server.ip} {CLOSED_PORT} </dev/null >/dev/null 2>&1 "
        f"|| echo refused; done; "
        f"dd if=/dev/zero bs=1000 count=2000 2>/dev/null | nc {server.ip} 8080"))  # fmt: skip
    assert out.stdout.split().count("refused") == 3
    wait_for(lambda: _quiet(real_node, server, client), what="no pod socket that could send")
    after = {p.name: _snmp(real_node, p) for p in (server, client)}

    def delta(name: str, *names: str) -> int:
        return sum(after[p][name] - before[p][name] for p in (names or after))

    expected = {
        "retransmits": delta("RetransSegs"),
        "resetsSent": delta("OutRsts"),
        "resetsReceived": 3 + delta("EstabResets", "server"),
        # connects that got established: attempts minus those that failed
        "connects": delta("ActiveOpens") - delta("AttemptFails", "client"),
    }
    assert expected["resetsSent"] >= 3 and expected["connects"] >= 1

    def summary_matches() -> dict[str, Any] | None:
        summary = _status(real_node, ns, "tcp").get("summary") or {}
        return summary if {k: summary.get(k) for k in expected} == expected else None

    wait_for(summary_matches, what=f"status.summary TCP health == the pods' MIB {expected}")
    flows = _status(real_node, ns, "tcp")["flows"]
    refusals = [f for f in flows if f["source"].get("pod") == "client"
                and f["destination"].get("port") == CLOSED_PORT]  # fmt: skip
    assert len(refusals) == 3 and all(f["resetsReceived"] == 1 for f in refusals)
    (sent,) = [f for f in flows if f["source"].get("pod") == "client"
               and f["destination"].get("port") == 8080]  # fmt: skip
    assert sent["connectLatencyMs"] > 0 and sent["node"] == real_node.name
