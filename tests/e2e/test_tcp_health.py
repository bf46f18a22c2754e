"""TCP health end to end: tracepoints → agent join → flow columns and session summary.

Real apiserver, operator and agent processes, pods backed by netns/veth/cgroups.
Packets are dropped with nft inside the server pod's namespace (no sch_netem
here). Every figure is held to the pods' own namespaces' TCP MIB counters or
to what the application saw.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from orb8_dev.controlplane import ControlPlane
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.netns import run
from tests.e2e.conftest import get_json, tcp_transfer, wait_for
from tests.e2e.test_trace_session import SHOP, apply_session, running_on, status

REFUSE = """
import socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
refused = []
for _ in range(n):
    s = socket.socket()
    try:
        s.connect((ip, port))
    except ConnectionRefusedError:
        refused.append(s.getsockname()[1])
    s.close()
print(" ".join(map(str, refused)))
"""
CLOSED_PORT = 9  # nothing listens on it in the server pod


def _snmp(pod: SimPod) -> dict[str, int]:
    lines = [line.split() for line in run(["cat", "/proc/net/snmp"], netns=pod.netns).splitlines()
             if line.startswith("Tcp:")]  # fmt: skip
    return {n: int(v) for n, v in zip(lines[0][1:], lines[1][1:], strict=True)}


def _quiet(*pods: SimPod) -> bool:
    """No socket left that could still send (only listeners and TIME-WAIT)."""
    for pod in pods:
        for line in run(["ss", "-tanH"], netns=pod.netns).splitlines():
            if line.split()[0] not in ("LISTEN", "TIME-WAIT"):
                return False
    return True


def _nft(pod: SimPod, rules: str) -> None:
    subprocess.run(["ip", "netns", "exec", pod.netns, "nft", "-f", "-"], input=rules, text=True,
                   check=True, capture_output=True, timeout=30)  # fmt: skip


def test_retransmits_resets_and_connect_latency_reach_flows_and_summary(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name="node-a")
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    server = kubelet.run_pod(namespace=namespace, name="server", node="node-a", labels=SHOP)
    start_agent("node-a")
    apply_session(control_plane, namespace, "tcp-debug",
                  probes={"network": {"enabled": True}})  # fmt: skip

    def tcp_loaded() -> bool:
        nodes = status(control_plane, namespace, "tcp-debug").get("nodes") or []
        return running_on(control_plane, namespace, "tcp-debug", {"node-a"}) and any(
            "tcp" in (n.get("probes") or []) for n in nodes
        )

    wait_for(tcp_loaded, timeout=90, what="the session Running with the tcp probe")
    before = {pod.name: _snmp(pod) for pod in (client, server)}

    # lose one data-bearing packet in eight to port 8083 on arrival at the
    # server, and every other SYN to port 8084 (the first connect waits 1 s)
    _nft(server, f"""
table inet o8t {{
  chain in {{ type filter hook input priority 0; policy accept;
    ip saddr {client.ip} tcp dport 8083 meta length > 200 numgen random mod 8 == 0 drop
    ip saddr {client.ip} tcp dport 8084 tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop
  }}
}}
""")  # fmt: skip
    lossy = tcp_transfer(client=client, server=server, nbytes=2_000_000, port=8083)
    slow = tcp_transfer(client=client, server=server, nbytes=10_000, port=8084)
    assert (lossy.received, slow.received) == (2_000_000, 10_000)
    out = client.run([sys.executable, "-c", REFUSE, server.ip, str(CLOSED_PORT), "3"])
    refused = [int(p) for p in out.split()]
    assert len(refused) == 3
    wait_for(lambda: _quiet(client, server), timeout=60, what="no socket left that could send")

    after = {pod.name: _snmp(pod) for pod in (client, server)}

    def delta(name: str) -> int:
        return sum(after[p][name] - before[p][name] for p in after)

    expected = {
        "retransmits": delta("RetransSegs"),
        "resetsSent": delta("OutRsts"),
        "resetsReceived": len(refused) + delta("EstabResets"),
        # established connects: the kernel's attempts minus its failed ones
        "connects": delta("ActiveOpens") - delta("AttemptFails"),
    }
    assert expected["connects"] == 2  # the two transfers; the refused three never got there
    assert expected["retransmits"] >= 2  # the lost SYN and at least one lost data packet
    assert expected["resetsSent"] == 3

    def summary_matches() -> dict[str, Any] | None:
        summary = status(control_plane, namespace, "tcp-debug").get("summary") or {}
        got = {k: summary.get(k) for k in expected}
        return summary if got == expected else None

    summary = wait_for(
        summary_matches, timeout=60, what=f"status.summary TCP health == the pods' MIB {expected}"
    )
    assert summary["connectLatencyMs"] > 0

    flows = status(control_plane, namespace, "tcp-debug")["flows"]

    def rows(src: SimPod, dst: SimPod, **where: int) -> list[dict[str, Any]]:
        return [
            f for f in flows
            if (f["source"].get("pod"), f["destination"].get("pod")) == (src.name, dst.name)
            and all((f["source"]["port"], f["destination"]["port"])[k == "dport"] == v
                    for k, v in where.items())
        ]  # fmt: skip

    # the SYN-delayed connect: its row (the client's socket) waited the lost SYN out
    (slow_row,) = rows(client, server, dport=8084)
    # the 1 s SYN retransmission timer, armed in jiffies (up to 10 ms early)
    assert slow_row["connectLatencyMs"] >= 990
    # the client's retransmits, all on its own rows, are the client's RetransSegs
    client_retrans = after["client"]["RetransSegs"] - before["client"]["RetransSegs"]
    assert sum(f.get("retransmits", 0) for f in rows(client, server)) == client_retrans
    # each refused connect: the client's row received the RST, the server's row sent it
    for port in refused:
        (syn,) = rows(client, server, sport=port)
        assert (syn["resetsReceived"], syn["destination"]["port"]) == (1, CLOSED_PORT)
        (rst,) = rows(server, client, dport=port)
        assert (rst["resetsSent"], rst["source"]["port"]) == (1, CLOSED_PORT)

    table = control_plane.kubectl("get", "ts", "tcp-debug", "-n", namespace).stdout.splitlines()
    header = table[0].split()
    assert "RETRANS" in header
    assert table[1].split()[header.index("RETRANS")] == str(expected["retransmits"])

    cli = subprocess.run(
        [sys.executable, "-m", "orb8_cli.main", "get", "flows", "tcp-debug", "-n", namespace],
        capture_output=True, text=True, env=control_plane.env(), timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.splitlines()[0].split()[-4:] == ["RETRANS", "RST", "S/R", "CONNECT"]
    print("\n".join(table), cli.stdout, summary, sep="\n")  # docs/tcp-health.md shows these
    node = get_json(control_plane, "ts", "tcp-debug", "-n", namespace)["status"]["nodes"][0]
    assert node["retransmits"] == expected["retransmits"]


def test_a_cross_node_flow_keeps_each_sockets_health(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    """Client on node-a, server on node-b: both agents see every flow; each socket's
    figures come from the node that holds it, and the merged rows keep them."""
    for node in ("node-a", "node-b"):
        kubelet.add_node(name=node)
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    server = kubelet.run_pod(namespace=namespace, name="server", node="node-b", labels=SHOP)
    start_agent("node-a")
    start_agent("node-b")
    apply_session(control_plane, namespace, "tcp-2n", probes={"network": {"enabled": True}})
    wait_for(lambda: running_on(control_plane, namespace, "tcp-2n", {"node-a", "node-b"}),
             timeout=90, what="the session Running on both nodes")  # fmt: skip
    before = {pod.name: _snmp(pod) for pod in (client, server)}
    _nft(server, f"""
table inet o8t {{
  chain in {{ type filter hook input priority 0; policy accept;
    ip saddr {client.ip} tcp dport 8085 tcp flags & (syn | ack) == syn numgen inc mod 2 == 0 drop
  }}
}}
""")  # fmt: skip
    slow = tcp_transfer(client=client, server=server, nbytes=10_000, port=8085)
    assert slow.received == 10_000
    refused = [int(p) for p in client.run(
        [sys.executable, "-c", REFUSE, server.ip, str(CLOSED_PORT), "2"]).split()]  # fmt: skip
    assert len(refused) == 2
    wait_for(lambda: _quiet(client, server), timeout=60, what="no socket left that could send")
    after = {pod.name: _snmp(pod) for pod in (client, server)}

    def delta(name: str, pod: SimPod) -> int:
        return after[pod.name][name] - before[pod.name][name]

    expected = {
        "retransmits": delta("RetransSegs", client) + delta("RetransSegs", server),
        "resetsSent": delta("OutRsts", client) + delta("OutRsts", server),
        "resetsReceived": len(refused) + delta("EstabResets", server),
    }
    assert expected["resetsSent"] == 2 and expected["retransmits"] >= 1

    def merged() -> list[dict[str, Any]] | None:
        st = status(control_plane, namespace, "tcp-2n")
        summary = st.get("summary") or {}
        if {k: summary.get(k) for k in expected} != expected:
            return None
        rows = [f for f in st.get("flows") or [] if f["destination"].get("port") == CLOSED_PORT]
        return rows if len(rows) == 2 else None

    rows = wait_for(merged, timeout=60, what=f"summary {expected} and the refusals' rows")
    # each refused connect's row: seen by both nodes, the RST received is node-a's socket's
    assert sorted(r["source"]["port"] for r in rows) == sorted(refused)
    assert all(r["resetsReceived"] == 1 for r in rows), rows
    flows = status(control_plane, namespace, "tcp-2n")["flows"]
    (slow_row,) = [f for f in flows if f["destination"].get("port") == 8085]
    assert slow_row["connectLatencyMs"] >= 990 and slow_row["retransmits"] >= 1
    rsts = [f for f in flows if f["source"].get("port") == CLOSED_PORT]
    assert sorted(r["destination"]["port"] for r in rsts) == sorted(refused)
    assert all(r["resetsSent"] == 1 for r in rsts), rsts
