"""Certificates for the local cluster, made with openssl.

One CA signs the apiserver's serving certificate and every client
certificate (kubelet, controller-manager, scheduler, the apiserver's own
client for kubelets). Client identities follow the names Kubernetes' default
RBAC and Node authorizer know: ``system:node:<name>`` in ``system:nodes``,
``system:kube-controller-manager``, ``system:kube-scheduler``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from orb8_common.errors import Orb8Error


class PkiError(Orb8Error):
    """openssl failed."""


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def write_ca(*, pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", str(pki / "ca.key"), "2048")
    _openssl(
        "req", "-x509", "-new", "-nodes", "-key", str(pki / "ca.key"), "-sha256",
        "-days", "3650", "-subj", "/CN=orb8-dev-ca", "-out", str(pki / "ca.crt"),
    )  # fmt: skip


def _sign(*, pki: Path, name: str, subject: str, extensions: str) -> None:
    key, csr, ext = pki / f"{name}.key", pki / f"{name}.csr", pki / f"{name}.ext"
    _openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
        "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-sha256",
        "-extfile", str(ext), "-out", str(pki / f"{name}.crt"),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()


def write_serving_cert(*, pki: Path, name: str, ips: list[str], dns: list[str]) -> None:
    """``<name>.crt``/``.key`` for a TLS server reachable at ``ips`` and ``dns``."""
    sans = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{d}" for d in dns)])
    _sign(
        pki=pki, name=name, subject=f"/CN={name}",
        extensions=f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip


def write_client_cert(*, pki: Path, name: str, user: str, groups: list[str]) -> None:
    """``<name>.crt``/``.key`` authenticating as ``user`` in ``groups``."""
    subject = "".join(f"/O={group}" for group in groups) + f"/CN={user}"
    _sign(pki=pki, name=name, subject=subject, extensions="extendedKeyUsage=clientAuth\n")


def write_service_account_key(*, pki: Path) -> None:
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
