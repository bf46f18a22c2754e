from __future__ import annotations

from typing import Any

import pytest

from orb8_common.models import LabelSelector, LabelSelectorRequirement, Selector
from orb8_operator.selectors import (
    matches_labels,
    matches_node,
    matches_requirement,
    resolve_namespaces,
)

LABELS = {"app": "checkout", "tier": "web"}


@pytest.mark.parametrize(
    ("operator", "key", "values", "expected"),
    [
        ("In", "app", ["checkout", "cart"], True),
        ("In", "app", ["cart"], False),
        ("In", "missing", ["x"], False),
        ("NotIn", "app", ["cart"], True),
        ("NotIn", "app", ["checkout"], False),
        ("NotIn", "missing", ["x"], True),
        ("Exists", "tier", [], True),
        ("Exists", "missing", [], False),
        ("DoesNotExist", "missing", [], True),
        ("DoesNotExist", "tier", [], False),
    ],
)
def test_requirement_operators(operator: str, key: str, values: list[str], expected: bool) -> None:
    req = LabelSelectorRequirement.model_validate(
        {"key": key, "operator": operator, "values": values}
    )
    assert matches_requirement(requirement=req, labels=LABELS) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"app": "checkout"}}, True),
        ({"matchLabels": {"app": "checkout", "tier": "db"}}, False),
        (
            {
                "matchLabels": {"app": "checkout"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["web", "api"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            },
            True,
        ),
        (
            {
                "matchLabels": {"app": "checkout"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}],
            },
            False,
        ),
    ],
)
def test_label_selector(selector: dict[str, Any] | None, expected: bool) -> None:
    model = None if selector is None else LabelSelector.model_validate(selector)
    assert matches_labels(selector=model, labels=LABELS) is expected


@pytest.mark.parametrize(
    ("node_selector", "node_labels", "expected"),
    [
        ({}, None, True),
        ({}, {"zone": "a"}, True),
        ({"zone": "a"}, {"zone": "a", "gpu": "true"}, True),
        ({"zone": "a", "gpu": "true"}, {"zone": "a"}, False),
        ({"zone": "a"}, None, False),
    ],
)
def test_node_selector(
    node_selector: dict[str, str], node_labels: dict[str, str] | None, expected: bool
) -> None:
    assert matches_node(node_selector=node_selector, node_labels=node_labels) is expected


def test_namespaces_default_to_the_sessions_own() -> None:
    assert resolve_namespaces(selector=Selector(), session_namespace="shop") == {"shop"}
    listed = Selector.model_validate({"namespaces": ["a", "b", "a"]})
    assert resolve_namespaces(selector=listed, session_namespace="shop") == {"a", "b"}
