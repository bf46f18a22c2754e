"""A kubernetes_asyncio watch that hands over each object as the JSON dict it came as.

The stock :class:`~kubernetes_asyncio.watch.Watch` also turns every event
into the client's model (a ``V1Pod``), or for custom objects dumps the
parsed JSON and parses it again; the operator reads only ``raw_object``, so
that work (the larger part of a pod event's cost) is skipped.
"""

from __future__ import annotations

from kubernetes_asyncio import watch

__all__ = ["RawWatch"]


class RawWatch(watch.Watch):
    """``event["object"]`` is ``event["raw_object"]``: no model is built."""

    def get_return_type(self, func: object) -> str:
        return ""
