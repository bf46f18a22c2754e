"""Label selector, node selector and namespace matching (Kubernetes semantics)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from orb8_common.errors import UsageError
from orb8_common.models import LabelSelector, LabelSelectorRequirement, Selector

__all__ = [
    "CROSS_NAMESPACE_ENV",
    "CrossNamespacePolicy",
    "configured_policy",
    "matches_labels",
    "matches_node",
    "matches_requirement",
    "refusal_message",
    "resolve_namespaces",
]


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


# How the operator process hands its --allow-cross-namespace rules to the reconciler.
CROSS_NAMESPACE_ENV = "ORB8_ALLOW_CROSS_NAMESPACE"


@dataclass(frozen=True, slots=True)
class CrossNamespacePolicy:
    """Which namespaces a session may select pods in besides its own.

    Default: none. Each rule is ``FROM:TO``: sessions in namespace FROM may
    select pods in namespace TO; ``*`` stands for any namespace on either
    side (``monitoring:*`` lets sessions in monitoring select every namespace,
    ``*:*`` turns the rule off).
    """

    rules: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def parse(cls, *, rules: Iterable[str]) -> CrossNamespacePolicy:
        parsed: set[tuple[str, str]] = set()
        for rule in rules:
            source, sep, target = rule.strip().partition(":")
            if not sep or not source or not target:
                raise UsageError(
                    f"--allow-cross-namespace {rule!r}: expected FROM:TO, e.g. monitoring:shop"
                    " or monitoring:*"
                )
            parsed.add((source, target))
        return cls(rules=frozenset(parsed))

    def to_env(self) -> str:
        return ",".join(f"{s}:{t}" for s, t in sorted(self.rules))

    def allows(self, *, session_namespace: str, namespace: str) -> bool:
        if namespace == session_namespace:
            return True
        return any(s in ("*", session_namespace) and t in ("*", namespace) for s, t in self.rules)

    def refused(self, *, session_namespace: str, selected: Iterable[str]) -> tuple[str, ...]:
        """The selected namespaces this session may not select, sorted."""
        return tuple(
            sorted(
                ns
                for ns in set(selected)
                if not self.allows(session_namespace=session_namespace, namespace=ns)
            )
        )


def refusal_message(*, session_namespace: str, refused: Iterable[str]) -> str:
    """The one-line status message for a refused cross-namespace selection."""
    names = sorted(refused)
    flags = " ".join(f"--allow-cross-namespace {session_namespace}:{ns}" for ns in names)
    return (
        f"spec.selector.namespaces: a session in namespace {session_namespace} may not"
        f" select pods in {', '.join(names)}; the operator must allow it ({flags})"
    )


@cache
def _policy_from(text: str) -> CrossNamespacePolicy:
    return CrossNamespacePolicy.parse(rules=[r for r in text.split(",") if r.strip()])


def configured_policy() -> CrossNamespacePolicy:
    """The rules the operator process was started with (``--allow-cross-namespace``)."""
    return _policy_from(os.environ.get(CROSS_NAMESPACE_ENV, ""))
