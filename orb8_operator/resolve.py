"""Session selector + pod index (+ node labels) → target pods grouped by node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orb8_common.models import Selector
from orb8_operator.pods import PodEntry, is_target
from orb8_operator.selectors import matches_labels, matches_node, resolve_namespaces

__all__ = ["Targets", "count_pods", "resolve_targets"]

# node name → that node's target pods, both sorted for stable output.
Targets = dict[str, tuple[PodEntry, ...]]


def resolve_targets(
    *,
    selector: Selector,
    session_namespace: str,
    pods: Iterable[PodEntry],
    node_labels: Mapping[str, Mapping[str, str]],
) -> Targets:
    """The pods a session traces, grouped by node; nodes and pods in sorted order.

    Pods are keyed by uid, so an entry listed twice is counted once.
    """
    namespaces = resolve_namespaces(selector=selector, session_namespace=session_namespace)
    chosen: dict[str, PodEntry] = {}
    for pod in pods:
        if pod.namespace not in namespaces or not is_target(pod=pod):
            continue
        if not matches_labels(selector=selector.pod_selector, labels=pod.label_map):
            continue
        if not matches_node(
            node_selector=selector.node_selector, node_labels=node_labels.get(pod.node)
        ):
            continue
        chosen[pod.uid] = pod
    grouped: dict[str, list[PodEntry]] = {}
    for pod in chosen.values():
        grouped.setdefault(pod.node, []).append(pod)
    return {
        node: tuple(sorted(grouped[node], key=lambda p: (p.namespace, p.name, p.uid)))
        for node in sorted(grouped)
    }


def count_pods(*, targets: Mapping[str, tuple[PodEntry, ...]]) -> int:
    return sum(len(pods) for pods in targets.values())
