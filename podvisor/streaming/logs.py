"""The options of a ``pods/log`` request, parsed and checked once for both ends.

kubectl sends ``container``, ``follow``, ``previous``, ``timestamps``, ``tailLines``, ``sinceSeconds`` or
``sinceTime``, ``limitBytes`` as query parameters. The API server checks them (kube answers 422 for bad
values, naming the field) before relaying; the node agent parses the same query to know what to send.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from podvisor.streaming.target import parse_bool

__all__ = ["LogOptions", "LogOptionsError"]


class LogOptionsError(ValueError):
    """Bad log options: ``problems`` lists (field, kube cause type, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, _, m in problems))


def _int(query: Mapping[str, str], name: str, problems: list[tuple[str, str, str]]) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        problems.append((name, "FieldValueInvalid", f"Invalid value: \"{raw}\": must be an integer"))
        return None


@dataclass(frozen=True, slots=True)
class LogOptions:
    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: dt.datetime | None = None
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> LogOptions:
        """Parse and check; raise `LogOptionsError` with kube's wording."""
        problems: list[tuple[str, str, str]] = []
        tail = _int(query, "tailLines", problems)
        since = _int(query, "sinceSeconds", problems)
        limit = _int(query, "limitBytes", problems)
        since_time = None
        raw_time = query.get("sinceTime")
        if raw_time:
            try:
                since_time = dt.datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
            except ValueError:
                problems.append(("sinceTime", "FieldValueInvalid", f"Invalid value: \"{raw_time}\": not RFC3339"))
        if tail is not None and tail < 0:
            problems.append(("tailLines", "FieldValueInvalid",
                             f"Invalid value: {tail}: must be greater than or equal to 0"))
        if since is not None and since < 1:
            problems.append(("sinceSeconds", "FieldValueInvalid", f"Invalid value: {since}: must be greater than 0"))
        if limit is not None and limit < 1:
            problems.append(("limitBytes", "FieldValueInvalid", f"Invalid value: {limit}: must be greater than 0"))
        if since is not None and raw_time:
            problems.append(("", "FieldValueForbidden",
                             "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"))
        if problems:
            raise LogOptionsError(problems)
        return cls(
            container=query.get("container", ""),
            follow=parse_bool(query.get("follow")),
            previous=parse_bool(query.get("previous")),
            timestamps=parse_bool(query.get("timestamps")),
            tail_lines=tail,
            since_seconds=since,
            since_time=since_time,
            limit_bytes=limit,
        )
