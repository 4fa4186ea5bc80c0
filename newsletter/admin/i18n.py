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


def N_(message: str) -> str:
    """Marks a message for the extractor only; it is translated where it is shown."""
    return message


# The words stored in the database that pages show: statuses of campaigns, runs,
# deliveries, subscriptions, sequences, imports and webhook events, and the roles.
WORDS = frozenset(
    {
        N_("draft"),
        N_("scheduled"),
        N_("running"),
        N_("paused"),
        N_("finished"),
        N_("cancelled"),
        N_("preparing"),
        N_("sending"),
        N_("failed"),
        N_("skipped"),
        N_("pending"),
        N_("sent"),
        N_("deferred"),
        N_("suppressed"),
        N_("delivered"),
        N_("unconfirmed"),
        N_("confirmed"),
        N_("unsubscribed"),
        N_("active"),
        N_("caught_up"),
        N_("stopped"),
        N_("queued"),
        N_("admin"),
        N_("editor"),
        N_("sender"),
        N_("analyst"),
        N_("ops"),
    }
)


def label(value: object) -> str:
    """A stored word (an enum or its value) in the reader's language; other text as is."""
    word = str(getattr(value, "value", value))
    return _(word) if word in WORDS else word


def install(environment: jinja2.Environment) -> None:
    """Give the environment's templates `_`, `gettext` and `ngettext`."""
    environment.add_extension("jinja2.ext.i18n")
    environment.install_gettext_translations(_translations, newstyle=True)  # type: ignore[attr-defined]
    environment.filters["status"] = label
    environment.filters["role"] = label
