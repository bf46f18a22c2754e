"""A real Kubernetes control plane: etcd and kube-apiserver.

The binaries are built from their Go modules by ``hack/k8s/build.sh`` and
cached by version. ``start`` writes certificates, a static token file and a
kubeconfig into a state directory, starts both servers and waits until the
apiserver is ready.

Two shapes:

* API only (``network=None``): the apiserver on loopback, nothing else. The
  session-scoped pytest fixture ``control_plane`` and ``make cluster-up
  CLUSTER_ARGS=--sim`` use it: tests play the kubelet themselves,
  namespaces are never finalized and garbage collection never runs.
* For a real node (``network`` given, see ``orb8_dev/node.py``): the
  apiserver listens on the ``kubernetes`` Service IP of the node's network
  with the Node authorizer, NodeRestriction and ServiceAccount admission,
  and reaches kubelets by their InternalIP with a client certificate.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orb8_common.errors import Orb8Error
from orb8_common.procfs import pid_alive
from orb8_dev import pki as certs
from orb8_dev.nodenet import NodeNetwork

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = REPO_ROOT / "crds"
BUILD_SCRIPT = REPO_ROOT / "hack" / "k8s" / "build.sh"
READY_TIMEOUT_S = 120.0
ADMIN_USER = "orb8-admin"


class ControlPlaneError(Orb8Error):
    """The control plane could not be built, started or reached."""


@dataclass(frozen=True)
class ControlPlane:
    """Handle on a running control plane."""

    state_dir: Path
    server: str
    token: str
    bin_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def kubectl_path(self) -> str:
        return str(self.bin_dir / "kubectl")

    def env(self) -> dict[str, str]:
        """Environment for child processes that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise with its stderr when ``check`` fails."""
        cmd = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def get(self, path: str) -> bytes:
        """GET a raw API path with the admin token."""
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            body: bytes = response.read()
            return body

    def get_json(self, path: str) -> dict[str, object]:
        body: dict[str, object] = json.loads(self.get(path))
        return body

    def version(self) -> str:
        return str(self.get_json("/version")["gitVersion"])

    def apply_crds(self) -> None:
        """Apply every CRD in crds/ and wait until the apiserver serves them."""
        files = sorted(CRD_DIR.glob("*.yaml"))
        if not files:
            raise ControlPlaneError(f"no CRDs found in {CRD_DIR}")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
        self.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            *[f"crd/{_crd_name(path)}" for path in files],
        )  # fmt: skip


def _crd_name(path: Path) -> str:
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("name:") and "." in stripped:
            return stripped.split(":", 1)[1].strip()
    raise ControlPlaneError(f"{path}: no metadata.name found")


def build_binaries() -> Path:
    """Build (or find cached) kube-apiserver, etcd and kubectl; return their directory."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_kubeconfig(*, path: Path, server: str, ca_file: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "orb8-dev",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "orb8-dev", "context": {"cluster": "orb8-dev", "user": ADMIN_USER}}],
        "current-context": "orb8-dev",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
    path.chmod(0o600)


def _spawn(*, cmd: list[str], log: Path) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    return proc.pid


def _wait_ready(*, plane: ControlPlane, pids: dict[str, int], log_dir: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            if not pid_alive(pid):
                tail = _tail(log_dir / f"{name}.log")
                raise ControlPlaneError(f"{name} exited during start-up:\n{tail}")
        try:
            if plane.get("/readyz") == b"ok":
                return
        except (urllib.error.URLError, OSError, ssl.SSLError) as err:
            last_error = str(err)
        time.sleep(0.5)
    raise ControlPlaneError(
        f"kube-apiserver not ready after {READY_TIMEOUT_S:.0f}s ({last_error}):\n"
        + _tail(log_dir / "kube-apiserver.log")
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _write_pki(*, pki: Path, network: NodeNetwork | None) -> None:
    """CA, the apiserver's serving certificate, the service-account key and, for
    a real node, the apiserver's client certificate for kubelets."""
    certs.write_ca(pki=pki)
    ips = ["127.0.0.1"] + ([network.service_ip, network.node_ip] if network else [])
    certs.write_serving_cert(
        pki=pki, name="apiserver", ips=ips,
        dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"],
    )  # fmt: skip
    certs.write_service_account_key(pki=pki)
    if network:
        # system:masters, so the kubelet's webhook authorizer allows exec/logs.
        certs.write_client_cert(
            pki=pki, name="apiserver-kubelet-client", user="kube-apiserver-kubelet-client",
            groups=["system:masters"],
        )  # fmt: skip


def _apiserver_args(
    *, pki: Path, network: NodeNetwork | None, listen_ip: str | None = None
) -> list[str]:
    if network is None:
        return [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            # Without a controller-manager no namespace gets a "default"
            # ServiceAccount, so the admission plugin would refuse every pod.
            "--disable-admission-plugins=ServiceAccount",
        ]
    return [
        # Without kube-proxy the apiserver listens on the `kubernetes` Service
        # IP itself, so pods' in-cluster config reaches it (nodenet.py). With
        # kube-proxy (kubeproxy.py) it listens on the node IP, the Service's
        # endpoint, and kube-proxy DNATs the Service IP to it (an endpoint
        # that is itself a ClusterIP is rejected by kube-proxy's nftables).
        f"--bind-address={listen_ip or network.service_ip}",
        f"--advertise-address={network.node_ip}",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={network.service_cidr}",
        "--enable-admission-plugins=NodeRestriction",
        # The node's name does not resolve; its InternalIP is on this host.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
    ]


def start(
    *, state_dir: Path, bin_dir: Path | None = None, network: NodeNetwork | None = None,
    wait: bool = True, listen_ip: str | None = None,
) -> ControlPlane:  # fmt: skip
    """Start etcd and kube-apiserver with state in ``state_dir``.

    Returns when the apiserver is ready, or at once with ``wait=False`` (then
    call :func:`wait_ready`). ``network`` is the real node's network (see the
    module docstring); None means the API-only shape on loopback.
    ``listen_ip``: the real node's apiserver address when not its Service IP
    (the node IP, where kube-proxy runs).
    """
    bin_dir = bin_dir or build_binaries()
    if (state_dir / "pids.json").exists():
        stop(state_dir=state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Every start is a fresh, empty cluster: nothing from an earlier run leaks in.
    shutil.rmtree(state_dir / "etcd", ignore_errors=True)
    log_dir = state_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    pki = state_dir / "pki"
    shutil.rmtree(pki, ignore_errors=True)
    _write_pki(pki=pki, network=network)
    token = secrets.token_hex(16)
    (state_dir / "tokens.csv").write_text(f"{token},{ADMIN_USER},{ADMIN_USER},system:masters\n")
    (state_dir / "tokens.csv").chmod(0o600)

    etcd_port, etcd_peer_port = free_port(), free_port()
    api_host, api_port = (
        (listen_ip or network.service_ip, 443) if network else ("127.0.0.1", free_port())
    )
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{etcd_peer_port}"
    pids: dict[str, int] = {}
    etcd_cmd = [
            str(bin_dir / "etcd"),
            "--name=orb8-dev",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=orb8-dev={peer_url}",
            "--unsafe-no-fsync=true",  # throwaway data: durability is not needed
            "--log-level=warn",
    ]  # fmt: skip
    pids["etcd"] = _spawn(cmd=etcd_cmd, log=log_dir / "etcd.log")
    apiserver_cmd = [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url}",
        f"--secure-port={api_port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--token-auth-file={state_dir / 'tokens.csv'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
        *_apiserver_args(pki=pki, network=network, listen_ip=listen_ip),
    ]
    pids["kube-apiserver"] = _spawn(cmd=apiserver_cmd, log=log_dir / "kube-apiserver.log")
    (state_dir / "pids.json").write_text(json.dumps(pids))
    server = f"https://{api_host}:{api_port}"
    plane = ControlPlane(state_dir=state_dir, server=server, token=token, bin_dir=bin_dir)
    _write_kubeconfig(path=plane.kubeconfig, server=server, ca_file=plane.ca_file, token=token)
    (state_dir / "plane.json").write_text(
        json.dumps(
            {"server": server, "token": token, "bin_dir": str(bin_dir),
             "apiserver_cmd": apiserver_cmd, "etcd_cmd": etcd_cmd}
        )
    )  # fmt: skip
    if wait:
        wait_ready(plane=plane)
    return plane


def wait_ready(*, plane: ControlPlane) -> None:
    """Wait until the apiserver of a started plane is ready; stop it on failure."""
    pids: dict[str, int] = json.loads((plane.state_dir / "pids.json").read_text())
    try:
        _wait_ready(plane=plane, pids=pids, log_dir=plane.state_dir / "logs")
    except ControlPlaneError:
        stop(state_dir=plane.state_dir)
        raise


def attach(*, state_dir: Path) -> ControlPlane | None:
    """Return the control plane running from ``state_dir``, or None."""
    try:
        pids = json.loads((state_dir / "pids.json").read_text())
        meta = json.loads((state_dir / "plane.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not all(pid_alive(pid) for pid in pids.values()):
        return None
    return ControlPlane(
        state_dir=state_dir, server=meta["server"], token=meta["token"],
        bin_dir=Path(meta["bin_dir"]),
    )  # fmt: skip


def _kill(*, pid: int, sig: signal.Signals, grace_s: float) -> None:
    os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_apiserver(*, state_dir: Path) -> None:
    """Kill only kube-apiserver (SIGKILL, as a crash would); etcd and its data stay.

    Clients see their connections drop and then refused until
    :func:`start_apiserver` brings it back on the same address.
    """
    pids: dict[str, int] = json.loads((state_dir / "pids.json").read_text())
    pid = pids["kube-apiserver"]
    if pid_alive(pid):
        _kill(pid=pid, sig=signal.SIGKILL, grace_s=10.0)


def start_apiserver(*, state_dir: Path) -> ControlPlane:
    """Start kube-apiserver again with the command, port and certificates of the first start."""
    pids: dict[str, int] = json.loads((state_dir / "pids.json").read_text())
    meta = json.loads((state_dir / "plane.json").read_text())
    if pid_alive(pids["kube-apiserver"]):
        raise ControlPlaneError(f"kube-apiserver (pid {pids['kube-apiserver']}) still runs")
    log_dir = state_dir / "logs"
    pids["kube-apiserver"] = _spawn(
        cmd=list(meta["apiserver_cmd"]), log=log_dir / "kube-apiserver.log"
    )
    (state_dir / "pids.json").write_text(json.dumps(pids))
    plane = ControlPlane(
        state_dir=state_dir, server=meta["server"], token=meta["token"],
        bin_dir=Path(meta["bin_dir"]),
    )  # fmt: skip
    _wait_ready(plane=plane, pids=pids, log_dir=log_dir)
    return plane


def stop_etcd(*, state_dir: Path) -> None:
    """Kill only etcd (SIGKILL); its data directory stays for :func:`start_etcd`."""
    pids: dict[str, int] = json.loads((state_dir / "pids.json").read_text())
    if pid_alive(pids["etcd"]):
        _kill(pid=pids["etcd"], sig=signal.SIGKILL, grace_s=10.0)


def start_etcd(*, state_dir: Path) -> ControlPlane:
    """Start etcd again on its data, ports and flags; return once the apiserver is ready."""
    pids: dict[str, int] = json.loads((state_dir / "pids.json").read_text())
    meta = json.loads((state_dir / "plane.json").read_text())
    if pid_alive(pids["etcd"]):
        raise ControlPlaneError(f"etcd (pid {pids['etcd']}) still runs")
    log_dir = state_dir / "logs"
    pids["etcd"] = _spawn(cmd=list(meta["etcd_cmd"]), log=log_dir / "etcd.log")
    (state_dir / "pids.json").write_text(json.dumps(pids))
    plane = ControlPlane(
        state_dir=state_dir, server=meta["server"], token=meta["token"],
        bin_dir=Path(meta["bin_dir"]),
    )  # fmt: skip
    _wait_ready(plane=plane, pids=pids, log_dir=log_dir)
    return plane


def stop(*, state_dir: Path, grace_s: float = 10.0) -> None:
    """Stop the servers started from ``state_dir`` (apiserver first) and forget them."""
    try:
        pids: dict[str, int] = json.loads((state_dir / "pids.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    for name in ("kube-apiserver", "etcd"):
        pid = pids.get(name)
        if pid is None or not pid_alive(pid):
            continue
        _kill(pid=pid, sig=signal.SIGTERM, grace_s=grace_s)
    (state_dir / "pids.json").unlink(missing_ok=True)
