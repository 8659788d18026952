"""Matching rules shared by the filters and the scores: label selectors, node selector terms, taints.

All follow the Kubernetes API's written semantics:
- a LabelSelector's ``matchLabels`` and ``matchExpressions`` are ANDed; an empty selector matches
  everything, a missing (null) one nothing;
- a NodeSelector's terms are ORed; inside a term, expressions and fields are ANDed; a term with
  neither matches nothing. ``NotIn`` and ``DoesNotExist`` match a node without the label; ``Gt``/``Lt``
  compare the label as an integer (no label or not an integer: no match). ``matchFields`` knows only
  ``metadata.name``;
- a toleration matches a taint when the effects agree (an empty toleration effect matches all), and
  either the operator is ``Exists`` (an empty key with ``Exists`` tolerates everything) or the values
  are equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "label_selector_matches", "node_selector_term_matches", "node_selector_matches", "toleration_matches",
    "tolerates", "first_untolerated", "node_labels",
]


def node_labels(node: dict[str, Any]) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _expr_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = str(expr.get("key", ""))
    op = str(expr.get("operator", ""))
    values = [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != str(v):
            return False
    return all(_expr_matches(e, labels) for e in selector.get("matchExpressions") or [])


def node_selector_term_matches(term: Mapping[str, Any], node: dict[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = node_labels(node)
    if not all(_expr_matches(e, labels) for e in exprs):
        return False
    name = str((node.get("metadata") or {}).get("name", ""))
    for f in fields:
        if f.get("key") != "metadata.name":
            return False
        if not _expr_matches(f, {"metadata.name": name}):
            return False
    return True


def node_selector_matches(selector: Mapping[str, Any] | None, node: dict[str, Any]) -> bool:
    terms = (selector or {}).get("nodeSelectorTerms") or []
    return any(node_selector_term_matches(t, node) for t in terms)


def toleration_matches(tol: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = tol.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = tol.get("key") or ""
    op = tol.get("operator") or "Equal"
    if key and key != taint.get("key"):
        return False
    if op == "Exists":
        return True
    if not key:  # an empty key is only valid with Exists
        return False
    return str(tol.get("value") or "") == str(taint.get("value") or "")


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations)


def first_untolerated(taints: Iterable[Mapping[str, Any]], tolerations: Iterable[Mapping[str, Any]],
                      effects: tuple[str, ...]) -> Mapping[str, Any] | None:
    tols = list(tolerations)
    for taint in taints:
        if taint.get("effect") in effects and not tolerates(tols, taint):
            return taint
    return None
