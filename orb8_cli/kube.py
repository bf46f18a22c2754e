"""The CLI's access to the cluster: kubeconfig loading and reading a session."""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from orb8_common.crd import GROUP, VERSION
from orb8_common.errors import ClusterUnavailableError, Orb8Error


class SessionNotFoundError(Orb8Error):
    """The named session does not exist."""


# The kubernetes client reports a file that is YAML but not a kubeconfig with
# whatever TypeError or KeyError its dict walk hits first.
_KUBECONFIG_ERRORS = (ConfigException, OSError, TypeError, KeyError, AttributeError, ValueError)


def _kubeconfig_error(kubeconfig: str | None, err: Exception) -> ClusterUnavailableError:
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if isinstance(err, ConfigException | OSError):
        return ClusterUnavailableError(f"cannot load kubeconfig {where}: {err}")
    return ClusterUnavailableError(f"cannot load kubeconfig {where}: not a kubeconfig file")


def _api(*, kubeconfig: str | None) -> client.CustomObjectsApi:
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except _KUBECONFIG_ERRORS as err:
        raise _kubeconfig_error(kubeconfig, err) from err
    return client.CustomObjectsApi(api_client)


def custom_api(*, kubeconfig: str | None) -> client.CustomObjectsApi:
    """The custom-objects API of the kubeconfig's current context."""
    return _api(kubeconfig=kubeconfig)


def core_api(*, kubeconfig: str | None) -> client.CoreV1Api:
    """The core/v1 API of the kubeconfig's current context."""
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except _KUBECONFIG_ERRORS as err:
        raise _kubeconfig_error(kubeconfig, err) from err
    return client.CoreV1Api(api_client)


def current_namespace(*, kubeconfig: str | None) -> str:
    """The namespace of the kubeconfig's current context ("default" when unset)."""
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except _KUBECONFIG_ERRORS as err:
        raise _kubeconfig_error(kubeconfig, err) from err
    context = (active or {}).get("context") if isinstance(active, dict) else None
    namespace = context.get("namespace") if isinstance(context, dict) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def get_session(
    *, kubeconfig: str | None, plural: str, namespace: str, name: str
) -> dict[str, Any]:
    api = _api(kubeconfig=kubeconfig)
    try:
        body = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, _request_timeout=15
        )
    except ApiException as err:
        if err.status == 404:
            raise SessionNotFoundError(
                f"{plural} {name!r} not found in namespace {namespace!r}"
            ) from err
        raise ClusterUnavailableError(
            f"reading {plural} {namespace}/{name}: {err.status} {err.reason}"
        ) from err
    except HTTPError as err:
        raise ClusterUnavailableError(f"cannot reach the cluster: {err}") from err
    if not isinstance(body, dict):
        raise ClusterUnavailableError(f"unexpected answer reading {plural} {namespace}/{name}")
    return body
