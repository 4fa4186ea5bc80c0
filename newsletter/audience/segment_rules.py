"""A segment's rules: a small tree of conditions over subscribers, as JSON and as one line.

JSON (what is stored and what the API takes)::

    {"match": "all", "rules": [
        {"field": "status", "op": "eq", "value": "confirmed"},
        {"field": "attr.city", "op": "in", "value": ["Oslo", "Bergen"]},
        {"not": {"field": "clicked_within", "op": "eq", "value": "30d"}}
    ]}

The same as one line (the CLI's form; `format_line` and `parse_line` are inverses)::

    status=confirmed and attr.city in ("Oslo", "Bergen") and not clicked_within=30d

A node is a group (`match` all or any, over `rules`), a negation (`not`) or a
condition (`field`, `op`, `value`). The fields:

| field | ops | value |
|---|---|---|
| `list` | eq ne in | list slug(s): a confirmed member of the list |
| `list.<slug>` | eq ne in | subscription status(es) on that list |
| `status` | eq ne in | subscription status(es) on any list |
| `attr.<key>` | eq ne in contains gt gte lt lte present absent | text, number or YYYY-MM-DD |
| `timezone` | eq ne in present absent | IANA zone name(s) |
| `subscribed_since`, `subscribed_before` | eq | YYYY-MM-DD or a duration ago (`30d`) |
| `bounce` | eq ne in | none, soft (soft bounces counted), suppressed |
| `opened_within`, `clicked_within`, `engaged_within` | eq | days (`30d`): human events only |

Errors name the rule's path: ``rules[2].op: unknown operator 'gt_'``. This module is
pure; services/segments.py compiles a tree to SQL expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from newsletter.errors import InvalidInputError

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Scalar | tuple[Scalar, ...] | None = None


@dataclass(frozen=True)
class Group:
    match: str  # "all" or "any"
    rules: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    rule: Node


Node = Condition | Group | Not

MAX_CONDITIONS = 100
MAX_DEPTH = 8
MAX_IN = 500
STATUSES = ("unconfirmed", "confirmed", "unsubscribed")
BOUNCE_STATES = ("none", "soft", "suppressed")
ENGAGEMENT_FIELDS = ("opened_within", "clicked_within", "engaged_within")
SINCE_FIELDS = ("subscribed_since", "subscribed_before")
EQUALITY = ("eq", "ne", "in")
COMPARISONS = ("gt", "gte", "lt", "lte")
PRESENCE = ("present", "absent")
OPS = (*EQUALITY, "contains", *COMPARISONS, *PRESENCE)
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,199}$")
_DAYS = re.compile(r"^([1-9][0-9]{0,3})d$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class RuleError(InvalidInputError):
    """A rule that cannot be understood; the message names its path."""


def _fail(path: str, message: str) -> RuleError:
    return RuleError(f"{path}: {message}" if path else message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def field_ops(field: str) -> tuple[str, ...] | None:
    """The operators a field takes, or None for an unknown field."""
    if field in ("list", "status", "bounce") or field.startswith("list."):
        return EQUALITY
    if field.startswith("attr."):
        return OPS
    if field == "timezone":
        return (*EQUALITY, *PRESENCE)
    if field in SINCE_FIELDS or field in ENGAGEMENT_FIELDS:
        return ("eq",)
    return None


def parse_rules(data: Any) -> Node:
    """The rule tree of a segment's JSON, checked; raises RuleError naming the path."""
    counter = [0]
    return _node(data, "", 0, counter)


def _node(data: Any, path: str, depth: int, counter: list[int]) -> Node:
    if not isinstance(data, dict):
        raise _fail(path, "a rule must be an object")
    if depth > MAX_DEPTH:
        raise _fail(path, f"rules nest at most {MAX_DEPTH} deep")
    if "not" in data:
        if set(data) != {"not"}:
            raise _fail(path, "a 'not' rule has no other keys")
        return Not(_node(data["not"], _join(path, "not"), depth + 1, counter))
    if "match" in data or "rules" in data:
        extra = set(data) - {"match", "rules"}
        if extra:
            raise _fail(_join(path, sorted(extra)[0]), "unknown key in a group")
        match = data.get("match", "all")
        if match not in ("all", "any"):
            raise _fail(_join(path, "match"), f"must be 'all' or 'any', not {match!r}")
        rules = data.get("rules")
        if not isinstance(rules, list) or not rules:
            raise _fail(_join(path, "rules"), "must be a non-empty list of rules")
        prefix = _join(path, "rules")
        return Group(
            match,
            tuple(
                _node(rule, f"{prefix}[{i}]", depth + 1, counter) for i, rule in enumerate(rules)
            ),
        )
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise _fail(path, f"a segment has at most {MAX_CONDITIONS} conditions")
    return _condition(data, path)


def _condition(data: dict[str, Any], path: str) -> Condition:
    extra = set(data) - {"field", "op", "value"}
    if extra:
        raise _fail(_join(path, sorted(extra)[0]), "unknown key in a condition")
    field = data.get("field")
    if not isinstance(field, str) or not field:
        raise _fail(_join(path, "field"), "missing (e.g. 'status', 'attr.city', 'list')")
    ops = field_ops(field)
    if ops is None:
        raise _fail(_join(path, "field"), f"unknown field {field!r}")
    if field.startswith("attr.") and not _KEY.match(field[5:]):
        raise _fail(_join(path, "field"), "an attribute name is letters, digits, '_' or '-'")
    if field.startswith("list.") and not _SLUG.match(field[5:]):
        raise _fail(_join(path, "field"), f"{field[5:]!r} is not a list slug")
    op = data.get("op", "eq")
    if op not in OPS:
        raise _fail(_join(path, "op"), f"unknown operator {op!r}")
    if op not in ops:
        raise _fail(_join(path, "op"), f"{field} does not take {op!r} (only {', '.join(ops)})")
    value = _value(field, op, data.get("value"), _join(path, "value"))
    return Condition(field, op, value)


def _value(field: str, op: str, value: Any, path: str) -> Scalar | tuple[Scalar, ...] | None:
    if op in PRESENCE:
        if value is not None:
            raise _fail(path, f"{op!r} takes no value")
        return None
    if op == "in":
        if not isinstance(value, list | tuple) or not value:
            raise _fail(path, "'in' takes a non-empty list")
        if len(value) > MAX_IN:
            raise _fail(path, f"'in' takes at most {MAX_IN} values")
        return tuple(_scalar(field, op, v, f"{path}[{i}]") for i, v in enumerate(value))
    return _scalar(field, op, value, path)


def _scalar(field: str, op: str, value: Any, path: str) -> Scalar:
    boolean_ok = isinstance(value, bool) and field.startswith("attr.") and op in ("eq", "ne")
    if (isinstance(value, bool) or not isinstance(value, str | int | float)) and not boolean_ok:
        raise _fail(path, "must be text or a number")
    if isinstance(value, str) and (len(value) > 500 or not value.isprintable()):
        raise _fail(path, "must be printable text of at most 500 characters")
    if field == "list" and not (isinstance(value, str) and _SLUG.match(value)):
        raise _fail(path, f"{value!r} is not a list slug")
    if (field == "status" or field.startswith("list.")) and value not in STATUSES:
        raise _fail(path, f"must be one of {', '.join(STATUSES)}, not {value!r}")
    if field == "bounce" and value not in BOUNCE_STATES:
        raise _fail(path, f"must be one of {', '.join(BOUNCE_STATES)}, not {value!r}")
    if field in ENGAGEMENT_FIELDS and not (isinstance(value, str) and _DAYS.match(value)):
        raise _fail(path, f"must be a number of days like '30d', not {value!r}")
    if field in SINCE_FIELDS and not (
        isinstance(value, str) and (_DAYS.match(value) or _is_date(value))
    ):
        raise _fail(path, f"must be a date YYYY-MM-DD or a duration like '30d', not {value!r}")
    comparing = field.startswith("attr.") and op in COMPARISONS
    if comparing and isinstance(value, str) and not _is_date(value):
        raise _fail(path, f"{op!r} compares with a number or a date YYYY-MM-DD")
    if field.startswith("attr.") and op == "contains" and not isinstance(value, str):
        raise _fail(path, "'contains' takes text")
    if field == "timezone" and not isinstance(value, str):
        raise _fail(path, "must be a time zone name like 'Europe/Oslo'")
    return value  # type: ignore[no-any-return]


def _is_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def days(value: str) -> int:
    """The number of days of a checked duration like '30d'."""
    match = _DAYS.match(value)
    assert match is not None
    return int(match.group(1))


def to_json(node: Node) -> dict[str, Any]:
    """The JSON form of a tree (what `parse_rules` reads back)."""
    if isinstance(node, Group):
        return {"match": node.match, "rules": [to_json(rule) for rule in node.rules]}
    if isinstance(node, Not):
        return {"not": to_json(node.rule)}
    out: dict[str, Any] = {"field": node.field, "op": node.op}
    if node.value is not None:
        out["value"] = list(node.value) if isinstance(node.value, tuple) else node.value
    return out


# --- the one-line form ---------------------------------------------------------------

_SYMBOLS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_WORD_OPS = ("in", "contains", "present", "absent")
_OPS_OF_SYMBOLS = {symbol: op for op, symbol in _SYMBOLS.items()}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<symbol>!=|>=|<=|=|>|<|\(|\)|,)
      | (?P<word>[^\s"=!<>(),]+)
    )""",
    re.VERBOSE,
)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_BARE = re.compile(r"^[A-Za-z0-9_./:+-]+$")


def format_line(node: Node) -> str:
    """The one-line form of a tree."""
    return _format(node, top=True)


def _format(node: Node, top: bool = False) -> str:
    if isinstance(node, Group):
        text = f" {'and' if node.match == 'all' else 'or'} ".join(
            _format(rule) for rule in node.rules
        )
        return text if top or len(node.rules) == 1 else f"({text})"
    if isinstance(node, Not):
        return f"not {_format(node.rule)}"
    if node.op in ("present", "absent"):
        return f"{node.field} {node.op}"
    if node.op == "in":
        assert isinstance(node.value, tuple)
        return f"{node.field} in ({', '.join(_literal(v) for v in node.value)})"
    if node.op == "contains":
        return f"{node.field} contains {_literal(node.value)}"
    return f"{node.field}{_SYMBOLS[node.op]}{_literal(node.value)}"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    reserved = ("and", "or", "not", "true", "false", "in", "contains", "present", "absent")
    if _BARE.match(text) and not _NUMBER.match(text) and text.lower() not in reserved:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_line(text: str) -> Node:
    """The tree of a one-line form, checked as `parse_rules` checks JSON (errors name
    the position in the line, then the rule path)."""
    tokens = _tokens(text)
    parser = _LineParser(tokens, text)
    node = parser.expression()
    if parser.pos < len(tokens):
        raise RuleError(f"unexpected {tokens[parser.pos][1]!r} at word {parser.pos + 1}")
    return parse_rules(to_json(node))


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise RuleError(
                f"cannot read the rule at character {pos + 1}: {text[pos : pos + 20]!r}"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not tokens:
        raise RuleError("the rule is empty")
    return tokens


class _LineParser:
    """expression := term ("or" term)*; term := factor ("and" factor)*;
    factor := "not" factor | "(" expression ")" | condition."""

    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.text = text

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise RuleError("the rule ends too early")
        self.pos += 1
        return token

    def is_word(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "word" and token[1].lower() == word

    def expression(self) -> Node:
        terms = [self.term()]
        while self.is_word("or"):
            self.pos += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else Group("any", tuple(terms))

    def term(self) -> Node:
        factors = [self.factor()]
        while self.is_word("and"):
            self.pos += 1
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else Group("all", tuple(factors))

    def factor(self) -> Node:
        if self.is_word("not"):
            self.pos += 1
            return Not(self.factor())
        if self.peek() == ("symbol", "("):
            self.pos += 1
            node = self.expression()
            if self.peek() != ("symbol", ")"):
                raise RuleError(f"missing ')' before word {self.pos + 1}")
            self.pos += 1
            return node
        return self.condition()

    def condition(self) -> Condition:
        kind, field = self.take()
        if kind != "word":
            raise RuleError(f"expected a field name at word {self.pos}, not {field!r}")
        kind, op_text = self.take()
        if kind == "symbol" and op_text in _OPS_OF_SYMBOLS:
            return Condition(field, _OPS_OF_SYMBOLS[op_text], self.scalar())
        if kind == "word" and op_text.lower() in _WORD_OPS:
            op = op_text.lower()
            if op in ("present", "absent"):
                return Condition(field, op)
            if op == "contains":
                return Condition(field, op, self.scalar())
            if self.take() != ("symbol", "("):
                raise RuleError(f"'in' takes a list in parentheses, at word {self.pos}")
            values = [self.scalar()]
            while self.peek() == ("symbol", ","):
                self.pos += 1
                values.append(self.scalar())
            if self.take() != ("symbol", ")"):
                raise RuleError(f"missing ')' after the values of 'in', at word {self.pos}")
            return Condition(field, op, tuple(values))
        raise RuleError(f"unknown operator {op_text!r} after {field!r}")

    def scalar(self) -> Scalar:
        kind, text = self.take()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if kind != "word":
            raise RuleError(f"expected a value at word {self.pos}, not {text!r}")
        if _NUMBER.match(text):
            return float(text) if "." in text else int(text)
        if text in ("true", "false"):
            return text == "true"
        return text


# --- the console's rule rows ---------------------------------------------------------

ROW_OPS = {
    "=": "eq",
    "!=": "ne",
    "in": "in",
    "contains": "contains",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "present": "present",
    "absent": "absent",
}


def rules_from_rows(match: str, rows: list[tuple[str, str, str]]) -> dict[str, Any] | None:
    """Rules from the composer's rows of (field, operator, value), as typed; empty rows
    are left out, `in` takes values separated by commas; None when every row is empty.
    Checked as `parse_rules` checks JSON (rules[i] is the i-th filled row, from 0)."""
    conditions: list[dict[str, Any]] = []
    for field, op_text, text in rows:
        field, text = field.strip(), text.strip()
        if not field:
            continue
        op = ROW_OPS.get(op_text.strip(), op_text.strip())
        condition: dict[str, Any] = {"field": field, "op": op}
        if op == "in":
            condition["value"] = [_typed(v.strip()) for v in text.split(",") if v.strip()]
        elif op not in PRESENCE:
            condition["value"] = _typed(text)
        conditions.append(condition)
    if not conditions:
        return None
    rules = {"match": "any" if match == "any" else "all", "rules": conditions}
    return to_json(parse_rules(rules))


def _typed(text: str) -> Scalar:
    """A value typed in a form: a number or true/false when it reads as one."""
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    if text in ("true", "false"):
        return text == "true"
    return text
