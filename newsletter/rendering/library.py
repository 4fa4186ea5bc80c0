"""The template files: email and web templates and the email stylesheet.

The built-in files are the project's top-level `templates/` folder, shipped inside
the package (`newsletter/templates/` in an installed wheel). A publisher may replace
any of them with a file of the same relative name in their own folder
(`NEWSLETTER_TEMPLATES_DIR`), which is looked in first; a file put there (or removed)
takes effect at the next render, without a restart.

These templates are ours or the publisher's operator's, so they render in a normal
Jinja2 environment; staff-written templates stored in the database never do (see
sandbox.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from newsletter.rendering.text import html_to_text

_PACKAGE = Path(__file__).resolve().parent.parent
# In an installed wheel the templates sit inside the package; in a checkout (and an
# editable install) they are the top-level folder beside it.
BUILTIN_DIR = next(
    (d for d in (_PACKAGE / "templates", _PACKAGE.parent / "templates") if d.is_dir()),
    _PACKAGE / "templates",
)
EMAIL_TEMPLATES = ("digest", "article")  # built-in campaign templates: email/<name>.html/.txt


class _OverridingLoader(jinja2.BaseLoader):
    """Finds a template in the override folder first, then among the built-in ones.

    A built-in template stays cached only while no override of it exists, so an
    override added later is used at the next render.
    """

    def __init__(self, override: Path | None) -> None:
        self.override = override
        self.builtin = jinja2.FileSystemLoader(BUILTIN_DIR)
        self.overrides = jinja2.FileSystemLoader(override) if override else None

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if self.overrides is not None:
            try:
                return self.overrides.get_source(environment, template)
            except jinja2.TemplateNotFound:
                pass
        source, filename, uptodate = self.builtin.get_source(environment, template)
        if self.override is None:
            return source, filename, uptodate
        shadow = self.override.joinpath(*jinja2.loaders.split_template_path(template))

        def still_builtin() -> bool:
            return (uptodate is None or uptodate()) and not shadow.exists()

        return source, filename, still_builtin

    def list_templates(self) -> list[str]:
        names = set(self.builtin.list_templates())
        if self.overrides is not None:
            names.update(self.overrides.list_templates())
        return sorted(names)


def _environment(loader: jinja2.BaseLoader, autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["html_to_text"] = html_to_text
    return env


class TemplateLibrary:
    """The template files one service uses: built-in, each replaceable by an override."""

    def __init__(self, override: Path | None = None) -> None:
        self.override = override
        self.loader = _OverridingLoader(override)
        self.html = _environment(self.loader, autoescape=True)
        self.text = _environment(self.loader, autoescape=False)

    def render(self, name: str, context: dict[str, Any]) -> str:
        """One template file, e.g. "email/confirm.html"; HTML-escaped when the name ends
        in .html."""
        env = self.html if name.endswith(".html") else self.text
        return env.get_template(name).render(context)

    def web_environment(self) -> jinja2.Environment:
        """A fresh environment over the same files for web pages, which a web framework
        adds its own globals to (the email environments stay as they are). Pages may
        leave optional values out (a missing `error` is no error)."""
        return jinja2.Environment(loader=self.loader, autoescape=True)


@lru_cache(maxsize=8)
def template_library(override: str = "") -> TemplateLibrary:
    """The library for an override folder ("" for the built-in templates only), shared
    by every caller in the process."""
    return TemplateLibrary(Path(override) if override else None)


BUILTIN = template_library()
