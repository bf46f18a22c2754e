"""Label selector, node selector and namespace matching (Kubernetes semantics)."""

from __future__ import annotations

from collections.abc import Mapping

from orb8_common.models import LabelSelector, LabelSelectorRequirement, Selector

__all__ = ["matches_labels", "matches_node", "matches_requirement", "resolve_namespaces"]


def matches_requirement(
    *, requirement: LabelSelectorRequirement, labels: Mapping[str, str]
) -> bool:
    """One matchExpressions entry against a label set."""
    present = requirement.key in labels
    op = requirement.operator
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op == "In":
        return present and labels[requirement.key] in requirement.values
    # NotIn: a missing key satisfies it, as in Kubernetes.
    return not present or labels[requirement.key] not in requirement.values


def matches_labels(*, selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; None and the empty selector match everything."""
    if selector is None:
        return True
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(
        matches_requirement(requirement=req, labels=labels) for req in selector.match_expressions
    )


def matches_node(
    *, node_selector: Mapping[str, str], node_labels: Mapping[str, str] | None
) -> bool:
    """A nodeSelector map; an empty one matches every node, even one whose labels are unknown."""
    if not node_selector:
        return True
    if node_labels is None:
        return False
    return all(node_labels.get(k) == v for k, v in node_selector.items())


def resolve_namespaces(*, selector: Selector, session_namespace: str) -> frozenset[str]:
    """The namespaces a session selects pods from; its own when none are listed."""
    return frozenset(selector.namespaces) if selector.namespaces else frozenset({session_namespace})
