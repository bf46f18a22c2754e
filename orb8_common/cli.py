"""Command-line pieces the orb8 processes share: one-line usage errors and
argument types that refuse bad values before anything starts."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn
from urllib.parse import urlsplit

from kubernetes_asyncio import config

from orb8_common.errors import UsageError

__all__ = ["OneLineParser", "http_url", "load_credentials", "port"]


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def http_url(text: str) -> str:
    """An http:// URL with a host and a port, e.g. http://0.0.0.0:8080/healthz."""
    parts = urlsplit(text)
    try:
        has_port = parts.port is not None
    except ValueError:
        has_port = False
    if parts.scheme != "http" or not parts.hostname or not has_port:
        raise argparse.ArgumentTypeError(
            f"not an http://HOST:PORT/PATH URL: {text!r} (e.g. http://0.0.0.0:8080/healthz)"
        )
    return text


# The client reports a file that is YAML but not a kubeconfig with whatever
# TypeError or KeyError its dict walk hits first.
_KUBECONFIG_ERRORS = (
    config.ConfigException,
    OSError,
    TypeError,
    KeyError,
    AttributeError,
    ValueError,
)


def _check_exists(kubeconfig: str | None) -> None:
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    missing = [p for p in path.split(os.pathsep) if p and not os.path.exists(p)]
    if missing:
        hint = "" if kubeconfig or os.environ.get("KUBECONFIG") else " (and not in a cluster)"
        raise UsageError(f"cannot load kubeconfig {missing[0]}: no such file{hint}")


async def load_credentials(*, kubeconfig: str | None, in_cluster: bool = True) -> None:
    """Load ``kubeconfig`` (or, without one, the in-cluster service account, else
    $KUBECONFIG / ~/.kube/config) into kubernetes_asyncio's default configuration.

    Raises UsageError with one line saying which file is wrong and why.
    """
    quiet = logging.getLogger("kubernetes_asyncio.config.kube_config")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "Config not found" warning repeats our error
    try:
        if kubeconfig is None and in_cluster:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
                return
            except config.ConfigException:
                pass
        _check_exists(kubeconfig)
        await config.load_kube_config(config_file=kubeconfig)
    except _KUBECONFIG_ERRORS as err:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        if isinstance(err, config.ConfigException | OSError):
            why = str(err)
        else:
            why = "not a kubeconfig file"
        raise UsageError(f"cannot load kubeconfig {where}: {why}") from None
    finally:
        quiet.setLevel(level)
