"""The agent watches Services and EndpointSlices (no periodic listing), against the real
apiserver.

A simulated node (no kube-proxy, so no DNAT): the client pod sends UDP to a
ClusterIP through a static route and neighbour entry in its namespace, so the
packets cross its host-side veth exactly as a pod's packets to a Service do
before kube-proxy translates them. The agent talks to the apiserver through
orb8_dev/faultproxy.py, whose request log tells a watch event from a relist:
a Service created after the agent started names the flow with no second
listing. With the watch streams cut every second, the watches resume from
their resourceVersion (still no relisting); a 410 Expired event makes them
list once more.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from orb8_dev.controlplane import ControlPlane
from orb8_dev.faultproxy import FaultProxy
from orb8_dev.kubelet import SimKubelet, SimPod
from orb8_dev.netns import run
from tests.e2e.conftest import TRAFFIC, AgentProcess, wait_for
from tests.e2e.faults import http_status, http_text
from tests.e2e.test_trace_session import SHOP, apply_session, running_on, status

NODE = "node-s"
SERVICES = "/api/v1/services?"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices?"
FAKE_MAC = "02:00:5e:00:00:01"  # nothing answers for a ClusterIP without kube-proxy


@pytest.fixture
def proxy(control_plane: ControlPlane, tmp_path: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(plane=control_plane, state_dir=tmp_path).start()
    try:
        yield p
    finally:
        p.close()


def _create_service(plane: ControlPlane, ns: str, name: str, *, backend: SimPod) -> str:
    """A ClusterIP Service (UDP 80 → 8080) and its EndpointSlice naming ``backend``; no
    selector, since no controller fills slices here. Returns the ClusterIP."""
    svc = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP",
                 "ports": [{"name": "app", "port": 80, "targetPort": 8080, "protocol": "UDP"}]},
    }  # fmt: skip
    created = json.loads(plane.kubectl("create", "-o", "json", "-f", "-",
                                       input=json.dumps(svc)).stdout)  # fmt: skip
    eps = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [backend.ip], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "namespace": ns, "name": backend.name}}],
        "ports": [{"name": "app", "port": 8080, "protocol": "UDP"}],
    }  # fmt: skip
    plane.kubectl("create", "-f", "-", input=json.dumps(eps))
    ip: str = created["spec"]["clusterIP"]
    return ip


def _named_flow(plane: ControlPlane, ns: str, session: str, *, client: SimPod, ip: str,
                service: str) -> dict[str, Any] | None:  # fmt: skip
    """Send a few datagrams from ``client`` to ``ip``:80, then look for their flow in the
    session's status named as ``service`` (each poll sends again: a flow first reported
    before the agent knew the Service is named by a later report)."""
    run(["ip", "route", "replace", f"{ip}/32", "dev", "eth0"], netns=client.netns)
    run(["ip", "neigh", "replace", ip, "lladdr", FAKE_MAC, "dev", "eth0", "nud", "permanent"],
        netns=client.netns)  # fmt: skip
    client.run([*TRAFFIC, "udp-send", "--dst", ip, "--port", "80", "--size", "20",
                "--count", "3"])  # fmt: skip
    for flow in status(plane, ns, session).get("flows") or []:
        if flow["destination"].get("ip") == ip and flow.get("service") == service:
            return dict(flow)
    return None


def _requests(proxy: FaultProxy, prefix: str) -> tuple[int, list[int]]:
    """(listings, resourceVersions the watches started from) of one collection."""
    listings, versions = 0, []
    for method, target in proxy.requests():
        if method != "GET" or not target.startswith(prefix):
            continue
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        if "watch" in query:
            versions.append(int(query["resourceVersion"][0]))
        else:
            listings += 1
    return listings, versions


def _watching(agent: AgentProcess) -> set[str]:
    """The agent's watches reported connected on /metrics."""
    code, body = http_text(agent.http_port, "/metrics")
    return (
        set(re.findall(r'orb8_watch_connected\{watch="([a-z]+)"\} 1\.0', body)) if code else set()
    )


def _start(plane: ControlPlane, kubelet: SimKubelet, ns: str, start_agent: Any,
           proxy: FaultProxy, session: str) -> tuple[SimPod, SimPod, AgentProcess]:  # fmt: skip
    kubelet.add_node(name=NODE)
    client = kubelet.run_pod(namespace=ns, name="client", node=NODE, labels=SHOP)
    server = kubelet.run_pod(namespace=ns, name="server", node=NODE, labels=SHOP)
    agent = start_agent(NODE, "--kubeconfig", str(proxy.kubeconfig))
    apply_session(plane, ns, session, probes={"network": {"enabled": True}})
    wait_for(lambda: running_on(plane, ns, session, {NODE}), timeout=120,
             what="the session Running")  # fmt: skip
    wait_for(lambda: {"services", "endpointslices"} <= _watching(agent), timeout=60,
             what="the Service and EndpointSlice watches connected")  # fmt: skip
    return client, server, agent


def test_a_service_created_after_the_agent_started_names_flows_by_watch_event(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any, proxy: FaultProxy,
) -> None:  # fmt: skip
    plane, ns = control_plane, namespace
    client, server, agent = _start(plane, kubelet, ns, start_agent, proxy, "svc-watch")
    assert _requests(proxy, SERVICES)[0] == 1 and _requests(proxy, SLICES)[0] == 1

    ip = _create_service(plane, ns, "web", backend=server)
    flow = wait_for(
        lambda: _named_flow(plane, ns, "svc-watch", client=client, ip=ip, service=f"{ns}/web:80"),
        timeout=90, what="the flow to the new ClusterIP named by its Service",
    )  # fmt: skip
    # the only ready endpoint is the backend (no conntrack entry: nothing DNATed here)
    assert (flow["backend"]["pod"], flow["backend"]["port"]) == ("server", 8080), flow
    assert flow["source"]["pod"] == "client" and flow["protocol"] == "UDP"
    # learnt from watch events: each collection was listed once, and watched
    for prefix in (SERVICES, SLICES):
        listings, watches = _requests(proxy, prefix)
        assert listings == 1 and watches, (prefix, listings, watches)

    # no session counts flows any more: the watches stop
    plane.kubectl("delete", "ts", "svc-watch", "-n", ns)
    wait_for(lambda: not {"services", "endpointslices"} & _watching(agent), timeout=90,
             what="the Service watches stopped with the last flow session")  # fmt: skip
    assert http_status(agent.http_port, "/healthz") == 200


def test_cut_watches_resume_from_their_version_and_a_410_relists_once(
    control_plane: ControlPlane, kubelet: SimKubelet, namespace: str, operator: Any,
    start_agent: Any, proxy: FaultProxy,
) -> None:  # fmt: skip
    plane, ns = control_plane, namespace
    client, server, agent = _start(plane, kubelet, ns, start_agent, proxy, "svc-cut")
    _, first = _requests(proxy, SERVICES)

    proxy.set(cut_watches_after_s=1.0)
    wait_for(lambda: len(_requests(proxy, SERVICES)[1]) >= len(first) + 2, timeout=90,
             what="the Service watch cut and started again twice")  # fmt: skip
    ip = _create_service(plane, ns, "cut", backend=server)
    wait_for(
        lambda: _named_flow(plane, ns, "svc-cut", client=client, ip=ip, service=f"{ns}/cut:80"),
        timeout=120, what="a Service created while its watch is being cut naming the flow",
    )  # fmt: skip
    # the watch started after the Service's event resumes from a later version (the
    # flow can be named before the next cut, so wait for that watch)
    wait_for(lambda: _requests(proxy, SERVICES)[1][-1] > first[-1], timeout=90,
             what="a Service watch resumed from a version after the new Service")  # fmt: skip
    listings, versions = _requests(proxy, SERVICES)
    assert listings == 1, "a cut watch relisted instead of resuming"
    assert versions == sorted(versions), versions
    assert proxy.faults.cut >= 2

    # a compacted version: the apiserver's 410 Expired makes the next attempt a listing
    proxy.set(expire_next_watch=SERVICES.rstrip("?"))
    wait_for(lambda: proxy.faults.injected[410] == 1, timeout=90,
             what="the 410 Expired answered to a Service watch")  # fmt: skip
    proxy.set(cut_watches_after_s=None)
    late = _create_service(plane, ns, "late", backend=server)
    wait_for(
        lambda: _named_flow(plane, ns, "svc-cut", client=client, ip=late,
                            service=f"{ns}/late:80"),
        timeout=120, what="a Service created after the relist naming the flow",
    )  # fmt: skip
    assert _requests(proxy, SERVICES)[0] == 2, "410 Gone must relist exactly once"
    assert _requests(proxy, SLICES)[0] == 1, "the EndpointSlice watch never needed a relist"
    wait_for(lambda: http_status(agent.http_port, "/readyz") == 200, timeout=120,
             what="/readyz 200 with every watch connected again")  # fmt: skip
    assert {"nodeagentconfig", "services", "endpointslices"} <= _watching(agent)
