"""The kopf edge without a cluster: settings and error mapping."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from kubernetes_asyncio import client

from orb8_common.errors import ClusterUnavailableError, InvalidSpecError
from orb8_operator.handlers import (
    NoDiffBase,
    OperatorState,
    configure_settings,
    shutdown,
    to_kopf_error,
)
from orb8_operator.main import _parser


def test_settings_use_orb8_prefixes_and_watch_timeouts() -> None:
    settings = kopf.OperatorSettings()
    configure_settings(settings=settings)
    assert settings.persistence.finalizer == "orb8.io/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "orb8.io"
    # No diff-base: kopf keeps no essence per object and writes no annotation for it.
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, NoDiffBase)
    assert settings.watching.server_timeout is not None
    assert settings.watching.client_timeout is not None
    assert settings.watching.client_timeout > settings.watching.server_timeout
    assert settings.execution.max_workers == 4


def test_no_diff_base_sees_every_body_as_unchanged() -> None:
    """kopf compares fetch() (last handled) with build() (now): equal and empty for any
    body, so no event is a creation or update to kopf, and store() patches nothing."""
    storage = NoDiffBase()
    raw_before: kopf.RawBody = {"metadata": {"name": "a", "uid": "u1"}, "spec": {"x": 1}}
    raw_after: kopf.RawBody = {"metadata": {"name": "a", "uid": "u1"}, "spec": {"x": 2}}
    before, after = kopf.Body(raw_before), kopf.Body(raw_after)
    assert storage.fetch(body=before) == storage.build(body=after) == {}
    patch = kopf.Patch()
    storage.store(body=after, patch=patch, essence=storage.build(body=after))
    assert not patch


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (ClusterUnavailableError("apiserver: HTTP 503"), kopf.TemporaryError),
        (InvalidSpecError("spec.duration: bad"), kopf.PermanentError),
    ],
)
def test_errors_map_to_kopf(err: Exception, kind: type[Exception]) -> None:
    assert isinstance(err, ClusterUnavailableError | InvalidSpecError)
    mapped = to_kopf_error(err=err)
    assert isinstance(mapped, kind)
    assert str(err) in str(mapped)


def test_cli_defaults() -> None:
    args = _parser().parse_args([])
    assert args.liveness.endswith("/healthz")
    assert args.peering is False
    assert args.namespace == []
    assert _parser().parse_args(["--namespace", "a", "--namespace", "b"]).namespace == ["a", "b"]


@pytest.mark.parametrize(
    ("status", "retryable"), [(0, True), (409, True), (429, True), (503, True), (403, False)]
)
def test_api_errors_translate(status: int, retryable: bool) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    from orb8_operator.kube import translate

    err = translate(ApiException(status=status, reason="Nope"), what="list nodeagentconfigs")
    assert err.retryable is retryable
    assert str(err).startswith(f"list nodeagentconfigs: HTTP {status}")


def test_transport_errors_are_retryable() -> None:
    import aiohttp

    from orb8_operator.kube import translate

    err = translate(aiohttp.ClientConnectionError("refused"), what="list nodeagentconfigs")
    assert err.retryable
    assert str(err) == "list nodeagentconfigs: ClientConnectionError: refused"


def test_cleanup_ends_status_writes_before_closing_their_client() -> None:
    """A write still waiting on the apiserver at shutdown is cancelled while its client is
    open (it used to fail on the closed client and log a traceback per session)."""

    async def scenario() -> None:
        st = OperatorState()
        api = client.ApiClient()  # makes no request here
        seen_closed: list[bool] = []
        started = asyncio.Event()

        async def in_flight() -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # the apiserver has not answered yet
            except asyncio.CancelledError:
                seen_closed.append(api.rest_client.pool_manager.closed)
                raise

        st.api = api
        task = asyncio.create_task(in_flight())
        st.write_tasks.add(task)
        await asyncio.wait_for(started.wait(), timeout=60)
        await shutdown(st=st)
        assert task.cancelled()
        assert seen_closed == [False]

    asyncio.run(scenario())
