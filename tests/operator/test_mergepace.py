from __future__ import annotations

import pytest

from orb8_operator.mergepace import worth_merging_early

NODES = ("a", "b", "c")


@pytest.mark.parametrize(
    ("merged", "reported", "early"),
    [
        ({}, {}, False),  # nothing reported yet
        ({"a": "Running"}, {"a": "Running"}, False),  # nothing moved
        ({}, {"a": "Running"}, True),  # the first running node: the phase moves
        ({"a": "Pending"}, {"a": "Running"}, True),  # likewise from Pending
        ({"a": "Running"}, {"a": "Running", "b": "Running"}, False),  # one more joins: waits
        ({"a": "Running", "b": "Running"}, {"a": "Running", "b": "Running", "c": "Running"}, True),
        ({"a": "Running"}, {"a": "Degraded"}, True),  # trouble shows at once
        ({"a": "Running", "b": "Running"}, {"a": "Running", "b": "Failed"}, True),
        ({"a": "Running"}, {"a": "Running", "b": "Stopped"}, True),
        ({"a": "Running"}, {"a": "Pending"}, True),
        ({"a": "Running"}, {"a": "Running", "b": "Pending"}, False),  # not reporting yet
    ],
)
def test_worth_merging_early(merged: dict[str, str], reported: dict[str, str], early: bool) -> None:
    assert worth_merging_early(merged=merged, reported=reported, targeted=NODES) is early


def test_a_complete_picture_counts_only_targeted_nodes() -> None:
    merged = {"a": "Running"}
    reported = {"a": "Running", "b": "Running"}
    assert worth_merging_early(merged=merged, reported=reported, targeted=("a", "b"))
    assert not worth_merging_early(merged=merged, reported=reported, targeted=("a", "b", "c"))
    # A node that left the session still counts as moved only when its state does.
    assert not worth_merging_early(merged=merged, reported={"a": "Running"}, targeted=())
