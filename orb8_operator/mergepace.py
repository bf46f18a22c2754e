"""When a session's status is merged again before its report interval is up.

Every merge of a session is one status write of the whole session (its
per-node list and top-N rows), and in the spread layout 50 agents' first
reports for a session arrive one by one over an interval. Merging at each
arrival wrote each of 500 sessions four or five times in its first interval
and kept a 2-core apiserver behind for minutes. A report that only adds a
running node to a session that already runs waits for the interval, unless
it completes the picture (every targeted node has reported); anything else
a user should see at once still merges early: the first running node (the
session's phase moves), and a node that degrades, fails or stops.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

__all__ = ["worth_merging_early"]

_NOT_YET = (None, "Pending")


def worth_merging_early(
    *, merged: Mapping[str, str], reported: Mapping[str, str], targeted: Collection[str]
) -> bool:
    """Whether node states moved in a way worth a status write before the interval.

    ``merged``: node → state at the last merge; ``reported``: node → state in
    the agents' current reports; ``targeted``: nodes with target pods now.
    """
    moved = {
        node
        for node, state in reported.items()
        if merged.get(node) != state and not (state == "Pending" and merged.get(node) is None)
    }
    if not moved:
        return False
    joined = {
        node for node in moved if merged.get(node) in _NOT_YET and reported[node] == "Running"
    }
    if moved - joined:
        return True  # a node degraded, failed, stopped or went back to Pending
    if "Running" not in merged.values():
        return True  # the first running node: the session's phase moves
    answered = {node for node, state in reported.items() if state not in _NOT_YET}
    return set(targeted) <= answered
