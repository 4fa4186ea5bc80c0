"""Per-reader logic in staff-written templates and subjects, rendered once per variant.

A stored template or a campaign subject may read the reader: `subscriber.name`,
`subscriber.email`, `subscriber.attributes.plan` (or `subscriber.attributes["plan"]`),
e.g. `{% if subscriber.attributes.plan == "member" %}…{% endif %}`. A run whose
templates do is rendered once per distinct combination of the values they read (a
*variant*), each with the usual slots; a reader's message is their variant's, filled
as usual. A template that reads nothing about the reader pays nothing; one that
branches on an attribute with a few values pays a few renders; one that reads
something different for every reader (their name, say) is rendered for every reader,
tens of milliseconds each: `slot('name')` is the fast way to greet a reader by name.

The frozen run (what the archive shows) is the variant of a reader about whom we know
nothing: empty name, email and attributes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

import jinja2
from jinja2 import nodes

from newsletter.rendering.render import ArticleView, EmailContent, Link, Snapshot, render_email

T = TypeVar("T")
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


@dataclass(frozen=True)
class PersonalSpec:
    """What re-rendering a run for a variant needs, frozen with the run."""

    fields: tuple[str, ...]
    content: EmailContent
    builtin: str  # "digest" / "article", or "" for a stored template
    template: dict[str, str]  # a stored template's name, subject, html, text

    def to_json(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields),
            "content": asdict(self.content),
            "builtin": self.builtin,
            "template": dict(self.template),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PersonalSpec:
        c = data["content"]
        articles = tuple(
            ArticleView(
                **{
                    **a,
                    "tags": tuple(a.get("tags", ())),
                    "previous": Link(**a["previous"]) if a.get("previous") else None,
                    "next": Link(**a["next"]) if a.get("next") else None,
                }
            )
            for a in c["articles"]
        )
        content = EmailContent(**{**c, "articles": articles})
        return cls(tuple(data["fields"]), content, data["builtin"], dict(data["template"]))


def render_variant(spec: PersonalSpec, reader: dict[str, Any]) -> Snapshot:
    """The run's email as the reader `reader` (a `reader_context`) sees it."""
    if spec.builtin:
        return render_email(spec.builtin, spec.content, reader)
    from newsletter.rendering.sandbox import TemplateSource, render_staff_email

    return render_staff_email(TemplateSource(**spec.template), spec.content, reader)


class Variants(Generic[T]):
    """One run's compiled variants (`compile` turns a rendered variant into what
    sending needs), at most `keep` of them: the least recently used goes first."""

    def __init__(self, spec: PersonalSpec, compile: Callable[[Snapshot], T], keep: int) -> None:
        self.spec = spec
        self.compile = compile
        self.keep = keep
        self.compiled: OrderedDict[str, T] = OrderedDict()
        self.renders = 0  # how many variants were rendered (a cache miss each)

    def get(self, name: str, email: str, attributes: Mapping[str, Any] | None) -> T:
        key = variant_key(self.spec.fields, name, email, attributes)
        found = self.compiled.get(key)
        if found is not None:
            self.compiled.move_to_end(key)
            return found
        reader = reader_context(self.spec.fields, name, email, attributes)
        found = self.compiled[key] = self.compile(render_variant(self.spec, reader))
        self.renders += 1
        if len(self.compiled) > self.keep:
            self.compiled.popitem(last=False)
        return found
