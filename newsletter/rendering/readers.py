"""What staff-written templates and subjects read about the reader.

A stored template or a campaign subject may read `subscriber.name`,
`subscriber.email` and `subscriber.attributes.<key>`. What a template reads is found
statically, in its Jinja AST, so a run knows which values tell its variants apart
(see personal.py) and templates that read nothing pay nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
from jinja2 import nodes

READER = "subscriber"  # the template variable
ALL_ATTRIBUTES = "attributes"  # a template reads attributes in a way we cannot list
_PARSER = jinja2.Environment()  # parsing only; the sandbox compiles and renders
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})


def _keyed(node: nodes.Node) -> str | None:
    """The constant key of `x.key` / `x["key"]`, or None."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return str(node.arg.value)
    return None


def reader_fields(sources: Iterable[str]) -> tuple[str, ...]:
    """What the sources read about the reader, sorted: "name", "email", "attr.<key>",
    or ALL_ATTRIBUTES. Sources that do not parse read nothing (the sandbox reports
    their problem when they are compiled)."""
    fields: set[str] = set()
    for source in sources:
        if READER not in source:
            continue
        try:
            tree = _PARSER.parse(source)
        except jinja2.TemplateSyntaxError:
            continue
        reader_uses = {
            id(n) for n in tree.find_all(nodes.Name) if n.name == READER and n.ctx == "load"
        }
        accesses: list[nodes.Getattr | nodes.Getitem] = [
            *tree.find_all(nodes.Getattr),
            *tree.find_all(nodes.Getitem),
        ]
        attributes_nodes: dict[int, bool] = {}  # id → read with a constant key
        for access in accesses:
            if id(access.node) not in reader_uses:
                continue
            reader_uses.discard(id(access.node))
            key = _keyed(access)
            if key in ("name", "email"):
                fields.add(key)
            elif key == "attributes":
                attributes_nodes.setdefault(id(access), False)
            else:
                fields.add(ALL_ATTRIBUTES)
        for access in accesses:
            key = _keyed(access)
            if isinstance(access, nodes.Getattr) and key in _DICT_METHODS:
                continue  # .items() reads everything; .get("key") is counted below
            if id(access.node) in attributes_nodes and key is not None:
                attributes_nodes[id(access.node)] = True
                fields.add(f"attr.{key}")
        for call in tree.find_all(nodes.Call):  # subscriber.attributes.get("key")
            method = call.node
            if (
                isinstance(method, nodes.Getattr)
                and method.attr == "get"
                and id(method.node) in attributes_nodes
                and call.args
                and isinstance(call.args[0], nodes.Const)
            ):
                attributes_nodes[id(method.node)] = True
                fields.add(f"attr.{call.args[0].value}")
        if reader_uses or not all(attributes_nodes.values()):
            fields.add(ALL_ATTRIBUTES)  # `subscriber` or its attributes used whole
            if reader_uses:
                fields.update(("name", "email"))
    return tuple(sorted(fields))


def reader_context(
    fields: Iterable[str],
    name: str = "",
    email: str = "",
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `subscriber` a template sees: what it reads, as text ("" when unknown)."""
    attributes = attributes or {}
    fields = tuple(fields)
    if ALL_ATTRIBUTES in fields:
        shown = {str(k): "" if v is None else str(v) for k, v in attributes.items()}
    else:
        shown = {}
    for field in fields:
        if field.startswith("attr."):
            value = attributes.get(field.removeprefix("attr."))
            shown[field.removeprefix("attr.")] = "" if value is None else str(value)
    # Only what the templates read: it is also what tells variants apart.
    return {
        "name": (name or "") if "name" in fields else "",
        "email": (email or "") if "email" in fields else "",
        "attributes": shown,
    }


def variant_key(
    fields: tuple[str, ...], name: str, email: str, attributes: Mapping[str, Any] | None
) -> str:
    """Readers with the same key get the same message (but for their slots)."""
    return json.dumps(reader_context(fields, name, email, attributes), sort_keys=True)
