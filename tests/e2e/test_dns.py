"""DNS end to end: TraceSession with probes.dns → agent's DNS probe on the pod's veth → status.dns.

A simulated node carries a client pod (the target) and a DNS server pod
(not a target) running orb8_dev.dnsload. The client's own log of queries
and rcodes is the oracle for the session's status, the DNS-ERRORS printer
column, ``orb8 get dns`` and the agent's metrics.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from orb8_dev.controlplane import REPO_ROOT, ControlPlane
from orb8_dev.kubelet import SimKubelet
from orb8_dev.traffic_ctl import tc_filters
from tests.e2e.conftest import get_json, wait_for

DNSLOAD = [sys.executable, "-m", "orb8_dev.dnsload"]
SHOP = {"app": "shop"}
PLAN: list[dict[str, Any]] = (
    [{"name": "cart.shop", "qtype": "A"}] * 6
    + [{"name": "typo.nx", "qtype": "A"}] * 4
    + [{"name": "flaky.fail", "qtype": "AAAA"}] * 3
    + [{"name": "tcp.shop", "qtype": "A", "tcp": True}] * 2
)
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}


def dns_status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    st = get_json(plane, "ts", "dns-debug", "-n", namespace).get("status") or {}
    found: dict[str, Any] = st.get("dns") or {}
    return found


def test_dns_reaches_status_printer_column_cli_and_metrics(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    kubelet.add_node(name="node-a")
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    server = kubelet.run_pod(namespace=namespace, name="dns", node="node-a")
    dns = server.spawn([*DNSLOAD, "server", "--bind", server.ip], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=REPO_ROOT)  # fmt: skip
    try:
        assert dns.stdout is not None and b"listening" in dns.stdout.readline()
        agent = start_agent("node-a")
        body = {
            "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
            "metadata": {"name": "dns-debug", "namespace": namespace},
            "spec": {"selector": {"podSelector": {"matchLabels": SHOP}},
                     "probes": {"dns": {"enabled": True, "topNames": 10}},
                     "reportInterval": "1s"},
        }  # fmt: skip
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))

        def attached() -> bool:
            return "orb8_dns" in tc_filters(None, client.host_if)

        wait_for(attached, timeout=90, what="the DNS probe on the client's host veth")
        assert "orb8_dns" not in tc_filters(None, server.host_if)  # not a target
        assert "orb8_flows" not in tc_filters(None, client.host_if)  # network not asked for

        def zero_before_any_query() -> bool:
            # the probe runs, no query yet: DNS-ERRORS reads 0, not an empty cell
            table = control_plane.kubectl("get", "ts", "-n", namespace).stdout.splitlines()
            cells, headers = table[1].split(), table[0].split()
            return cells[headers.index("DNS-ERRORS")] == "0"

        wait_for(zero_before_any_query, timeout=60, what="DNS-ERRORS 0 before the first query")

        out = client.run([*DNSLOAD, "client", "--server", server.ip, "--timeout", "5",
                          "--plan", json.dumps(PLAN)])  # fmt: skip
        log = json.loads(out.strip().splitlines()[-1])["log"]
        assert all(e["rcode"] is not None for e in log)
        rcodes = Counter(RCODES[e["rcode"]] for e in log)

        def complete() -> dict[str, Any] | None:
            st = dns_status(control_plane, namespace)
            return st if st.get("queries") == len(PLAN) and st.get("answers") == len(PLAN) else None

        st = wait_for(complete, timeout=60, what="every query and answer in status.dns")
        assert st["nxdomain"] == rcodes["NXDOMAIN"] == 4
        assert st["servfail"] == rcodes["SERVFAIL"] == 3
        assert st["errors"] == 7 and st["unanswered"] == 0
        got = Counter[tuple[str, str, str]]()
        for row in st["names"]:
            assert (row["namespace"], row["pod"], row["node"]) == (namespace, "client", "node-a")
            assert row["latencyMs"] > 0 and row["latencyMaxMs"] >= row["latencyMs"]
            got[(row["query"], row["qtype"], row["rcode"])] += row["count"]
        assert got == Counter((e["name"], e["qtype"], RCODES[e["rcode"]]) for e in log)
        node = get_json(control_plane, "ts", "dns-debug", "-n", namespace)["status"]["nodes"][0]
        assert node["probes"] == ["dns"] and node["state"] == "Running"
        assert node["dns"]["queries"] == len(PLAN) and "names" not in node["dns"]

        table = control_plane.kubectl("get", "ts", "-n", namespace).stdout.splitlines()
        print("\n".join(table))  # the example in docs/dns.md
        headers = table[0].split()
        assert "DNS-ERRORS" in headers
        assert table[1].split()[headers.index("DNS-ERRORS")] == "7"

        cli = subprocess.run(
            [sys.executable, "-m", "orb8_cli.main", "get", "dns", "dns-debug", "-n", namespace,
             "-o", "json"],
            capture_output=True, text=True, env=control_plane.env(), timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == dns_status(control_plane, namespace)
        cli = subprocess.run(
            [sys.executable, "-m", "orb8_cli.main", "get", "dns", "dns-debug", "-n", namespace],
            capture_output=True, text=True, env=control_plane.env(), timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        print(cli.stdout, cli.stderr)
        assert f"{namespace}/client" in cli.stdout and "typo.nx" in cli.stdout

        text = urllib.request.urlopen(f"http://127.0.0.1:{agent.http_port}/metrics").read()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text.decode())
            for s in fam.samples
        }
        pod = (("namespace", namespace), ("pod", "client"))
        assert samples[("orb8_dns_queries_total", pod)] == len(PLAN)
        assert samples[("orb8_dns_answers_total", (*pod, ("rcode", "NXDOMAIN")))] == 4
        assert samples[("orb8_dns_answers_total", (*pod, ("rcode", "SERVFAIL")))] == 3
        assert samples[("orb8_dns_latency_seconds_count", ())] == len(PLAN)

        control_plane.kubectl("delete", "ts", "dns-debug", "-n", namespace, "--timeout=60s")
        wait_for(lambda: not attached(), timeout=30, what="the DNS probe detached")
        assert agent.proc.poll() is None, agent.logs()
    finally:
        dns.kill()
        dns.wait(timeout=30)


def test_server_pod_in_the_same_session_counts_each_query_once(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    """Client and DNS server are both targets (and flows are on too): the query crosses
    two target veths but is filed once, under the client; lost queries show UNANSWERED."""
    kubelet.add_node(name="node-a")
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    server = kubelet.run_pod(namespace=namespace, name="dns", node="node-a", labels=SHOP)
    dns = server.spawn([*DNSLOAD, "server", "--bind", server.ip], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=REPO_ROOT)  # fmt: skip
    try:
        assert dns.stdout is not None and b"listening" in dns.stdout.readline()
        start_agent("node-a")
        body = {
            "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
            "metadata": {"name": "dns-debug", "namespace": namespace},
            "spec": {"selector": {"podSelector": {"matchLabels": SHOP}},
                     "probes": {"dns": {"enabled": True}, "network": {"enabled": True}},
                     "reportInterval": "1s"},
        }  # fmt: skip
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))

        def attached() -> bool:
            return all(
                "orb8_dns" in (f := tc_filters(None, pod.host_if)) and "orb8_flows" in f
                for pod in (client, server)
            )

        wait_for(attached, timeout=90, what="DNS and flow probes on both target veths")
        plan = PLAN[:10] + [{"name": "lost.drop", "qtype": "A"}] * 2
        out = client.run([*DNSLOAD, "client", "--server", server.ip, "--timeout", "2",
                          "--plan", json.dumps(plan)])  # fmt: skip
        log = json.loads(out.strip().splitlines()[-1])["log"]
        answered = [e for e in log if e["rcode"] is not None]
        assert len(answered) == 10

        def complete() -> dict[str, Any] | None:
            st = dns_status(control_plane, namespace)
            return st if st.get("queries", 0) >= len(plan) and st.get("answers", 0) >= 10 else None

        st = wait_for(complete, timeout=60, what="the queries in status.dns")
        assert (st["queries"], st["answers"], st["unanswered"]) == (len(plan), 10, 2)
        assert st["nxdomain"] == 4 and st["errors"] == 4
        assert {r["pod"] for r in st["names"]} == {"client"}
        unanswered = [r for r in st["names"] if r["rcode"] == "UNANSWERED"]
        assert [(r["query"], r["count"]) for r in unanswered] == [("lost.drop", 2)]
        assert "latencyMs" not in unanswered[0]
        flows = get_json(control_plane, "ts", "dns-debug", "-n", namespace)["status"]["flows"]
        assert any(f["destination"].get("port") == 53 for f in flows)
    finally:
        dns.kill()
        dns.wait(timeout=30)


def test_dns_totals_survive_an_agent_sigkill_once(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any,
) -> None:  # fmt: skip
    """SIGKILL the agent mid-session: queries it had reported, queries it had not, and
    queries answered while no agent ran (its filter stays and counts into the pinned maps)
    all reach status.dns once after the restart, against the client's log."""
    kubelet.add_node(name="node-a")
    client = kubelet.run_pod(namespace=namespace, name="client", node="node-a", labels=SHOP)
    server = kubelet.run_pod(namespace=namespace, name="dns", node="node-a")
    dns = server.spawn([*DNSLOAD, "server", "--bind", server.ip], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=REPO_ROOT)  # fmt: skip
    log: list[dict[str, Any]] = []

    def ask(name: str) -> None:
        plan = [{"name": f"{name}.shop", "qtype": "A"}] * 3 + [
            {"name": f"{name}.nx", "qtype": "AAAA"}
        ] * 2
        out = client.run([*DNSLOAD, "client", "--server", server.ip, "--timeout", "5",
                          "--plan", json.dumps(plan)])  # fmt: skip
        log.extend(json.loads(out.strip().splitlines()[-1])["log"])

    def reached(total: int) -> dict[str, Any] | None:
        st = dns_status(control_plane, namespace)
        return st if st.get("queries") == total and st.get("answers") == total else None

    try:
        assert dns.stdout is not None and b"listening" in dns.stdout.readline()
        agent = start_agent("node-a")
        body = {
            "apiVersion": "orb8.io/v1alpha1", "kind": "TraceSession",
            "metadata": {"name": "dns-debug", "namespace": namespace},
            "spec": {"selector": {"podSelector": {"matchLabels": SHOP}},
                     "probes": {"dns": {"enabled": True}}, "reportInterval": "5s"},
        }  # fmt: skip
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(body))
        wait_for(lambda: "orb8_dns" in tc_filters(None, client.host_if), timeout=90,
                 what="the DNS probe on the client's host veth")  # fmt: skip
        ask("reported")
        wait_for(lambda: reached(len(log)), timeout=60, what="the first queries reported")
        ask("unreported")
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=30)
        assert "orb8_dns" in tc_filters(None, client.host_if)  # outlives the agent
        ask("while-down")
        again = start_agent("node-a")
        wait_for(lambda: reached(len(log)), timeout=90,
                 what="every query in status.dns after the restart")  # fmt: skip
        # and no more: one more round lands on exactly the new total
        ask("after")
        st = wait_for(lambda: reached(len(log)), timeout=60, what="the round after the restart")
        got = Counter[tuple[str, str, str]]()
        for row in st["names"]:
            got[(row["query"], row["qtype"], row["rcode"])] += row["count"]
        want = Counter((e["name"], e["qtype"], RCODES[e["rcode"]]) for e in log)
        assert got == want
        assert st["nxdomain"] == 2 * 4 and st["unanswered"] == 0
        assert again.proc.poll() is None, again.logs()
    finally:
        dns.kill()
        dns.wait(timeout=30)
