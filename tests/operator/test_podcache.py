"""The operator's pod cache folds list and watch events into PodEntry records."""

from __future__ import annotations

from orb8_operator.podcache import PodCache
from orb8_operator.pods import pod_entry_from_body
from tests.operator.factories import pod_body


def test_listing_then_events_keep_one_entry_per_pod() -> None:
    cache = PodCache()
    a, b = pod_body("a", ip="10.0.0.1"), pod_body("b", ip="10.0.0.2", labels={"app": "x"})
    assert cache.replace(bodies=[a, b]) is True
    assert cache.replace(bodies=[a, b]) is False
    assert {p.name for p in cache.entries()} == {"a", "b"}

    relabelled = pod_body("b", ip="10.0.0.2", labels={"app": "y"})
    assert cache.apply(event_type="MODIFIED", body=relabelled) is True
    assert cache.apply(event_type="MODIFIED", body=relabelled) is False  # nothing new
    assert {p.name: p.label_map for p in cache.entries()}["b"] == {"app": "y"}

    assert cache.apply(event_type="DELETED", body=a) is True
    assert cache.apply(event_type="DELETED", body=a) is False
    assert [p.name for p in cache.entries()] == ["b"]
    assert len(cache) == 1


def test_non_targets_are_kept_so_that_their_changes_are_seen() -> None:
    cache = PodCache()
    pending = pod_body("c", node=None, phase="Pending", ip=None)
    cache.apply(event_type="ADDED", body=pending)
    entry = pod_entry_from_body(body=pending)
    assert list(cache.entries()) == [entry]
    assert cache.apply(event_type="MODIFIED", body=pod_body("c", node="node-a")) is True


def test_objects_without_identity_are_ignored() -> None:
    cache = PodCache()
    assert cache.apply(event_type="ADDED", body={"metadata": {}}) is False
    assert len(cache) == 0


def test_changed_namespaces_are_reported_once() -> None:
    cache = PodCache()
    cache.replace(bodies=[pod_body("a", namespace="shop"), pod_body("b", namespace="infra")])
    assert cache.take_changed_namespaces() == {"shop", "infra"}
    assert cache.take_changed_namespaces() == set()
    cache.apply(event_type="MODIFIED", body=pod_body("a", namespace="shop", labels={"x": "y"}))
    cache.apply(event_type="MODIFIED", body=pod_body("b", namespace="infra"))  # unchanged
    assert cache.take_changed_namespaces() == {"shop"}
    cache.apply(event_type="DELETED", body=pod_body("b", namespace="infra"))
    assert cache.take_changed_namespaces() == {"infra"}
