"""Per-reader logic in staff-written templates and subjects, rendered once per variant.

A stored template or a campaign subject may read the reader: `subscriber.name`,
`subscriber.email`, `subscriber.attributes.plan` (or `subscriber.attributes["plan"]`),
e.g. `{% if subscriber.attributes.plan == "member" %}…{% endif %}`. A run whose
templates do is rendered once per distinct combination of the values they read (a
*variant*, see readers.py), each with the usual slots; a reader's message is their
variant's, filled as usual. A template that reads nothing about the reader pays
nothing; one that branches on an attribute with a few values pays a few renders; one
that reads something different for every reader (their name, say) is rendered for
every reader, tens of milliseconds each: `slot('name')` is the fast way to greet a
reader by name.

The frozen run (what the archive shows) is the variant of a reader about whom we know
nothing: empty name, email and attributes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from newsletter.rendering.library import BUILTIN, TemplateLibrary
from newsletter.rendering.model import PersonalSpec, Snapshot
from newsletter.rendering.readers import reader_context, variant_key
from newsletter.rendering.render import render_email

T = TypeVar("T")


def render_variant(
    spec: PersonalSpec, reader: dict[str, Any], library: TemplateLibrary = BUILTIN
) -> Snapshot:
    """The run's email as the reader `reader` (a `reader_context`) sees it."""
    return render_email(spec.source, spec.content, reader, library)


class Variants(Generic[T]):
    """One run's compiled variants (`compile` turns a rendered variant into what
    sending needs), at most `keep` of them: the least recently used goes first."""

    def __init__(
        self,
        spec: PersonalSpec,
        compile: Callable[[Snapshot], T],
        keep: int,
        library: TemplateLibrary = BUILTIN,
    ) -> None:
        self.spec = spec
        self.compile = compile
        self.keep = keep
        self.library = library
        self.compiled: OrderedDict[str, T] = OrderedDict()
        self.renders = 0  # how many variants were rendered (a cache miss each)

    def get(self, name: str, email: str, attributes: Mapping[str, Any] | None) -> T:
        key = variant_key(self.spec.fields, name, email, attributes)
        found = self.compiled.get(key)
        if found is not None:
            self.compiled.move_to_end(key)
            return found
        reader = reader_context(self.spec.fields, name, email, attributes)
        found = self.compiled[key] = self.compile(render_variant(self.spec, reader, self.library))
        self.renders += 1
        if len(self.compiled) > self.keep:
            self.compiled.popitem(last=False)
        return found
