"""One list-then-watch loop for every informer-style watch in orb8 (agent and operator).

:func:`list_watch` lists a collection in pages, then watches it from the
listed ``resourceVersion`` and yields what it learns: a :class:`Listing`
(every object, as it stands at the listing's version) and then one
:class:`Change` per ADDED/MODIFIED/DELETED event. It never returns:

* a watch that ends cleanly at the server-side ``timeout_seconds`` is started
  again from the last version seen (an event's or a bookmark's), with no
  relist and no delay (one that ends cleanly much sooner counts as an error);
* any error (a stream cut mid-response, a refused request, a timeout, a bug
  in a callback the caller gave) is retried with backoff, again from the
  last version seen, so what happened meanwhile arrives as events;
* ``410 Gone`` (that version was compacted away) makes the next attempt a
  fresh listing, whose :class:`Listing` replaces what the caller holds.

``state`` follows the connection for readiness and ``orb8_watch_*`` metrics.
Objects are the JSON dicts the apiserver sent (no client model is built).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from orb8_common.watchstate import WatchState

__all__ = ["Change", "Listing", "RawWatch", "list_watch", "raw"]

T = TypeVar("T")
LIST_PAGE = 500  # objects per list request: bounds what a listing holds at once


class RawWatch(watch.Watch):
    """``event["object"]`` is ``event["raw_object"]``: no model is built.

    The stock watch turns every event into the client's model (a ``V1Pod``),
    or for custom objects dumps the parsed JSON and parses it again; callers
    here read only the JSON, so that work (the larger part of an event's
    cost) is skipped.
    """

    def get_return_type(self, func: object) -> str:
        return ""


@dataclass(frozen=True)
class Listing(Generic[T]):
    """Every object of the collection at ``resource_version`` (after ``convert``)."""

    items: list[T]
    resource_version: str


@dataclass(frozen=True)
class Change:
    """One watch event: ``type`` is ADDED, MODIFIED or DELETED; ``obj`` the raw object."""

    type: str
    obj: dict[str, Any]


def raw(body: dict[str, Any]) -> dict[str, Any]:
    """``convert`` that keeps each listed object as it came."""
    return body


async def list_watch(
    *,
    list_func: Callable[..., Awaitable[Any]],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    state: WatchState,
    timeout_s: int,
    backoff_s: Sequence[float],
    log: logging.Logger,
    what: str = "",
    convert: Callable[[dict[str, Any]], T | None],
    page: int = LIST_PAGE,
) -> AsyncIterator[Listing[T] | Change]:
    """List then watch ``list_func(*args, **kwargs)`` for ever (see the module docstring).

    ``convert`` maps each listed object (None drops it; :func:`raw` keeps it)
    page by page, so a large listing never holds more than one page of raw
    objects.
    """
    kwargs = dict(kwargs or {})
    what = what or state.name
    version: str | None = None  # None: the next attempt lists first
    failures = 0
    while True:
        try:
            if version is None:
                items, listed = await _list(
                    list_func=list_func, args=args, kwargs=kwargs, convert=convert, page=page
                )
                state.synced()
                version = listed
                yield Listing(items=items, resource_version=listed)
            started = asyncio.get_running_loop().time()
            async with RawWatch() as stream:
                async for event in stream.stream(
                    _marking_accepted(list_func, state=state), *args, **kwargs,
                    resource_version=version,
                    timeout_seconds=timeout_s, allow_watch_bookmarks=True,
                    _request_timeout=timeout_s + 30,
                ):  # fmt: skip
                    state.synced()
                    failures = 0
                    # the client read it from this event (or bookmark) before handing it over
                    version = stream.resource_version or version
                    kind = event["type"]
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        yield Change(type=kind, obj=event["raw_object"])
            if asyncio.get_running_loop().time() - started < timeout_s / 2:
                # not the server's timeout: something in between closed it cleanly
                raise ConnectionError("watch ended early")
            state.synced()  # ended by the server's timeout: watch on from ``version``
        except Exception as err:  # aiohttp payload errors and bugs alike: back off, go on
            gone = isinstance(err, ApiException) and err.status == 410
            if gone:
                version = None  # compacted: only a fresh listing is complete again
            # ApiException's text spans lines; /readyz and the log want one
            state.lost(error=f"{err.status} {err.reason}" if isinstance(err, ApiException) else err)
            delay = backoff_s[min(failures, len(backoff_s) - 1)]
            failures += 1
            log.warning(
                "watch of %s failed (%s); %s in %ss",
                what, state.last_error, "relisting" if gone else "retrying", delay,
            )  # fmt: skip
            await asyncio.sleep(delay)


def _marking_accepted(
    list_func: Callable[..., Awaitable[Any]], *, state: WatchState
) -> Callable[..., Awaitable[Any]]:
    """``list_func`` that marks the watch synced once the apiserver accepts it.

    A watch resumed from a version is as good as a fresh one the moment the
    server answers 2xx; waiting for its first event would keep /readyz false
    for as long as nothing changes (up to the next bookmark, about a minute).
    """

    async def accepted(*args: Any, **kwargs: Any) -> Any:
        response = await list_func(*args, **kwargs)
        if 200 <= getattr(response, "status", 0) <= 299:
            state.synced()
        return response

    return accepted


async def _list(
    *,
    list_func: Callable[..., Awaitable[Any]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    convert: Callable[[dict[str, Any]], T | None],
    page: int,
) -> tuple[list[T], str]:
    """Every object (converted), listed in pages of raw JSON, and the list's version."""
    items: list[T] = []
    token: str | None = None
    while True:
        request: dict[str, Any] = {**kwargs, "limit": page, "_preload_content": False}
        if token:
            request["_continue"] = token
        response: Any = await list_func(*args, **request)
        if not 200 <= response.status <= 299:
            # unread, the client raises nothing for these: say what the apiserver said
            raise ApiException(status=response.status, reason=await _why(response))
        body = await response.json()
        for raw in body.get("items") or ():
            item = convert(raw)
            if item is not None:
                items.append(item)
        meta = body.get("metadata") or {}
        token = meta.get("continue")
        if not token:
            return items, str(meta["resourceVersion"])


async def _why(response: Any) -> str:
    """The message of a refused request's Status body (else its reason phrase)."""
    try:
        status = await response.json(content_type=None)
        return str(status.get("message") or response.reason)
    except Exception:  # not JSON: the reason phrase says enough
        return str(response.reason)
