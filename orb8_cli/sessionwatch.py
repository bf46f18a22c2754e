"""Follow one session through the apiserver's watch: ``--watch`` and ``orb8 top``.

:func:`follow_session` yields the session once as read, then again after
every change the watch reports. No polling: between changes it blocks on the
watch stream. Each watch request asks the server to end it after a few
minutes (so a silently dead connection is noticed) and resumes from the last
resourceVersion; a 410 Gone relists; any other failure is retried with
backoff, saying so once on stderr. A deleted session ends the iteration with
:class:`SessionDeletedError`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from orb8_cli.kube import SessionNotFoundError, custom_api, get_session
from orb8_common.crd import GROUP, VERSION
from orb8_common.errors import ClusterUnavailableError

# Server-side end of each watch request; the client gives up a bit later.
WATCH_SECONDS = 120
READ_TIMEOUT = WATCH_SECONDS + 30
MAX_BACKOFF = 10.0


class SessionDeletedError(SessionNotFoundError):
    """The session was deleted while being watched."""


def follow_session(
    *, kubeconfig: str | None, plural: str, namespace: str, name: str,
    on_retry: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The session's body now, then after each change, until it is deleted."""
    body = get_session(kubeconfig=kubeconfig, plural=plural, namespace=namespace, name=name)
    yield body
    api = custom_api(kubeconfig=kubeconfig)
    version = str(body.get("metadata", {}).get("resourceVersion", ""))
    backoff = 0.5
    warned = False
    report = on_retry or _stderr_once
    while True:
        try:
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                api.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                field_selector=f"metadata.name={name}", resource_version=version,
                timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
                _request_timeout=(10, READ_TIMEOUT),
            )  # fmt: skip
            for event in stream:
                obj = event.get("object") or event.get("raw_object") or {}
                version = str(obj.get("metadata", {}).get("resourceVersion", version))
                backoff, warned = 0.5, False
                if event.get("type") == "DELETED":
                    raise SessionDeletedError(f"{plural} {namespace}/{name} was deleted")
                if event.get("type") in ("ADDED", "MODIFIED"):
                    yield obj
        except ApiException as err:
            if err.status == 410:  # our resourceVersion is too old: read it afresh
                body = get_session(kubeconfig=kubeconfig, plural=plural, namespace=namespace,
                                   name=name)  # fmt: skip
                version = str(body.get("metadata", {}).get("resourceVersion", ""))
                yield body
                continue
            if not warned:
                report(f"watch of {namespace}/{name} failed ({err.status} {err.reason}); retrying")
                warned = True
        except (HTTPError, OSError, ClusterUnavailableError) as err:
            if not warned:
                report(f"watch of {namespace}/{name} lost ({type(err).__name__}); retrying")
                warned = True
        else:
            continue  # the server ended the request as asked: resume at once
        time.sleep(backoff)  # back off before the next try (not a synchronisation)
        backoff = min(MAX_BACKOFF, backoff * 2)


def _stderr_once(line: str) -> None:
    print(f"orb8: {line}", file=sys.stderr, flush=True)
