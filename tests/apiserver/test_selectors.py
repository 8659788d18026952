"""Label and field selectors as the query string spells them."""

from __future__ import annotations

import pytest

from podvisor.apiserver.errors import BadRequestError
from podvisor.apiserver.selectors import (
    format_label_selector,
    parse_field_selector,
    parse_label_selector,
    selector_from_dict,
)

LABELS = {"app": "web", "tier": "front", "rank": "5"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app=db", False),
        ("missing!=x", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app in (web, db)", True),
        ("app notin (web)", False),
        ("missing notin (x)", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("rank>3", True),
        ("rank<3", False),
        ("  app = web ", True),
        ("app=", False),
    ],
)
def test_label_selector_matching(text: str, matches: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize("text", ["app=web=x", "app in web", "a b", "=x", "app in (", "Bad Key=1", "k=bad value!"])
def test_label_selector_errors_are_bad_requests(text: str) -> None:
    with pytest.raises(BadRequestError):
        parse_label_selector(text)


def test_invalid_label_value_message() -> None:
    with pytest.raises(BadRequestError) as e:
        parse_label_selector("app=-web")
    assert e.value.message.startswith('unable to parse requirement: values[0][-web]: Invalid value: "-web": a valid label')


def test_field_selector() -> None:
    sel = parse_field_selector("metadata.name=a,spec.nodeName!=n1,status.phase==Running")
    assert sel.fields() == ["metadata.name", "spec.nodeName", "status.phase"]
    assert sel.matches({"metadata.name": "a", "spec.nodeName": "n2", "status.phase": "Running"})
    assert not sel.matches({"metadata.name": "a", "spec.nodeName": "n1", "status.phase": "Running"})
    assert sel.exact("metadata.name") == "a" and sel.exact("spec.nodeName") is None
    escaped = parse_field_selector(r"metadata.name=a\,b")
    assert escaped.matches({"metadata.name": "a,b"})
    assert parse_field_selector("").empty()
    with pytest.raises(BadRequestError) as e:
        parse_field_selector("metadata.name")
    assert e.value.message == "invalid selector: 'metadata.name'; can't understand 'metadata.name'"


def test_selector_from_label_selector_object() -> None:
    sel = selector_from_dict({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]},
                             {"key": "legacy", "operator": "DoesNotExist"}],
    })
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "legacy": "1"})
    assert str(sel) == "app=web,!legacy,tier in (back,front)"
    assert selector_from_dict({}).matches({})
    assert not selector_from_dict(None).matches({})
    assert format_label_selector({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert format_label_selector({}) == "<none>"
