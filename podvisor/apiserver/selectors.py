"""Label and field selectors: parsing the query-string forms and matching objects against them.

Label selectors follow apimachinery's grammar: comma-separated requirements ``k=v``, ``k==v``,
``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``, ``k>3``, ``k<3``. Field selectors are the
simpler ``k=v``, ``k==v``, ``k!=v`` list, with ``\\`` escaping ``,``, ``=`` and ``!``. Which field names a
resource supports is the strategy's business (see `podvisor.apiserver.strategies`); here fields are just a
``dict[str, str]`` per object. Parse errors raise `BadRequestError`, as the API answers 400 for them.

`selector_from_dict` turns a metav1.LabelSelector (``matchLabels``/``matchExpressions``) into the same
`LabelSelector`, so controllers' object selectors and query selectors match alike; ``str()`` of a
selector is its canonical query form (Scale's ``status.selector``, the Table ``SELECTOR`` column).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podvisor.apiserver.errors import BadRequestError
from podvisor.apiserver.validation import label_value_errors, qualified_name_errors

__all__ = [
    "Requirement",
    "LabelSelector",
    "FieldRequirement",
    "FieldSelector",
    "parse_label_selector",
    "parse_field_selector",
    "selector_from_dict",
    "format_label_selector",
]

_OPS_SET = ("in", "notin")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("gt", "lt"):
            if not present:
                return False
            try:
                have, want = int(value), int(self.values[0])
            except ValueError:
                return False
            return have > want if self.op == "gt" else have < want
        return False

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return "!" + self.key
        if self.op in _OPS_SET:
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        if self.op == "gt":
            return f"{self.key}>{self.values[0]}"
        if self.op == "lt":
            return f"{self.key}<{self.values[0]}"
        return f"{self.key}{self.op}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A conjunction of requirements; empty matches everything. ``nothing`` matches no object
    (a nil metav1.LabelSelector, as controllers treat it)."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def empty(self) -> bool:
        return not self.requirements and not self.nothing

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.nothing:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in sorted(self.requirements, key=lambda r: r.key))


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        have = fields.get(self.field, "")
        return have == self.value if self.op == "=" else have != self.value


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = field(default=())

    def empty(self) -> bool:
        return not self.requirements

    def fields(self) -> list[str]:
        return [r.field for r in self.requirements]

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def exact(self, name: str) -> str | None:
        """The value required by a ``name=value`` term, if any (lets the store narrow a scan)."""
        for r in self.requirements:
            if r.field == name and r.op == "=":
                return r.value
        return None


# --- label selector parsing ----------------------------------------------------------------------


class _Lexer:
    """Splits a selector into identifiers and operator tokens, the way apimachinery's lexer does."""

    _SPECIAL = "=!(),<>"

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self) -> str:
        save = self.pos
        tok = self.next()
        self.pos = save
        return tok

    def next(self) -> str:
        self._skip_ws()
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        if ch in self._SPECIAL:
            two = self.text[self.pos : self.pos + 2]
            if two in ("==", "!="):
                self.pos += 2
                return two
            self.pos += 1
            return ch
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in self._SPECIAL + " \t\r\n":
            self.pos += 1
        return self.text[start : self.pos]


def _bad(msg: str) -> BadRequestError:
    return BadRequestError(msg)


def _check_key(key: str) -> None:
    errs = qualified_name_errors(key)
    if errs:
        raise _bad(f'unable to parse requirement: key: Invalid value: "{key}": {"; ".join(errs)}')


def _check_value(value: str) -> None:
    errs = label_value_errors(value)
    if errs:
        raise _bad(f'unable to parse requirement: values[0][{value}]: Invalid value: "{value}": {"; ".join(errs)}')


def _is_ident(tok: str) -> bool:
    return bool(tok) and tok[0] not in _Lexer._SPECIAL


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the ``labelSelector`` query parameter; raises `BadRequestError` on a malformed one."""
    text = text.strip()
    if not text:
        return LabelSelector()
    lex = _Lexer(text)
    reqs: list[Requirement] = []
    while True:
        tok = lex.next()
        if tok == "!":
            key = lex.next()
            if not _is_ident(key):
                raise _bad(f"found '{key}', expected: identifier after '!'")
            _check_key(key)
            reqs.append(Requirement(key, "!"))
        elif _is_ident(tok):
            key = tok
            _check_key(key)
            op = lex.peek()
            if op in ("", ","):
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                lex.next()
                value = lex.peek()
                if _is_ident(value):
                    lex.next()
                else:
                    value = ""
                if value not in ("",) and lex.peek() not in ("", ","):
                    raise _bad(f"found '{lex.peek()}', expected: ',' or 'end of string'")
                _check_value(value)
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in ("<", ">"):
                lex.next()
                value = lex.next()
                try:
                    int(value)
                except ValueError:
                    raise _bad(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                    ) from None
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            elif op in _OPS_SET:
                lex.next()
                if lex.next() != "(":
                    raise _bad(f"found '{lex.peek()}', expected: '('")
                values: list[str] = []
                while True:
                    v = lex.next()
                    if v == ")":
                        break
                    if v == ",":
                        values.append("")
                        continue
                    if not _is_ident(v):
                        raise _bad(f"found '{v}', expected: ',', ')' or identifier")
                    _check_value(v)
                    values.append(v)
                    nxt = lex.next()
                    if nxt == ")":
                        break
                    if nxt != ",":
                        raise _bad(f"found '{nxt}', expected: ',' or ')'")
                if not values and op == "in":
                    raise _bad("unable to parse requirement: for 'in', 'notin' operators, values set can't be empty")
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise _bad(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        else:
            raise _bad(f"found '{tok or 'end of string'}', expected: !, identifier, or 'end of string'")
        sep = lex.next()
        if sep == "":
            break
        if sep != ",":
            raise _bad(f"found '{sep}', expected: ',' or 'end of string'")
    return LabelSelector(tuple(reqs))


# --- field selector parsing ----------------------------------------------------------------------


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_field_selector(text: str) -> FieldSelector:
    """Parse the ``fieldSelector`` query parameter; raises `BadRequestError` on a malformed one."""
    text = text.strip()
    if not text:
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op_text, op in (("!=", "!="), ("==", "="), ("=", "=")):
            idx = _find_unescaped(part, op_text)
            if idx >= 0:
                name = _unescape(part[:idx]).strip()
                value = _unescape(part[idx + len(op_text) :])
                reqs.append(FieldRequirement(name, op, value))
                break
        else:
            raise _bad(f"invalid selector: '{text}'; can't understand '{part}'")
    return FieldSelector(tuple(reqs))


def _find_unescaped(text: str, needle: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(needle, i):
            return i
        i += 1
    return -1


# --- metav1.LabelSelector ------------------------------------------------------------------------

_EXPR_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def selector_from_dict(sel: Any) -> LabelSelector:
    """A metav1.LabelSelector as a `LabelSelector`. None matches nothing; ``{}`` matches everything."""
    if sel is None:
        return LabelSelector(nothing=True)
    if not isinstance(sel, dict):
        return LabelSelector(nothing=True)
    reqs: list[Requirement] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append(Requirement(str(k), "=", (str(v),)))
    for e in sel.get("matchExpressions") or []:
        if not isinstance(e, dict):
            continue
        op = _EXPR_OPS.get(str(e.get("operator")))
        if op is None:
            return LabelSelector(nothing=True)
        reqs.append(Requirement(str(e.get("key", "")), op, tuple(str(v) for v in e.get("values") or [])))
    return LabelSelector(tuple(reqs))


def format_label_selector(sel: Any) -> str:
    """kubectl's rendering of a metav1.LabelSelector: ``app=web,tier in (a,b)``; ``<none>`` if empty."""
    if not isinstance(sel, dict):
        return "<none>"
    text = str(selector_from_dict(sel))
    return text or "<none>"
