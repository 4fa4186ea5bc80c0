"""One translation function for every string of the console: `_()` in Python and in
templates (Jinja2's i18n extension), ready for Babel's extractor. English is the
only catalogue, so the translations are the identity."""

from __future__ import annotations

import gettext

import jinja2

_translations = gettext.NullTranslations()


def _(message: str) -> str:
    return _translations.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return _translations.ngettext(singular, plural, count)


def install(environment: jinja2.Environment) -> None:
    """Give the environment's templates `_`, `gettext` and `ngettext`."""
    environment.add_extension("jinja2.ext.i18n")
    environment.install_gettext_translations(_translations, newstyle=True)  # type: ignore[attr-defined]
