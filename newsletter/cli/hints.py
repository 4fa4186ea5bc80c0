"""The command or option that fixes an error, added to its message on the terminal.

Domain errors (and skipped or warned-about items, `errors.Problem`) say what is wrong
in words every face can show, and may carry what fixes it as data (`errors.Remedy`);
only here does a remedy become a `newsletter …` command or a `--flag`, so the API and
the console never advise one.
"""

from __future__ import annotations

from newsletter.errors import NewsletterError, Problem, Remedy

# (action, thing, field) → the advice; `{key}` is the remedy's key.
COMMANDS: dict[tuple[str, str, str], str] = {
    ("create", "list", ""): "create it with `newsletter lists create {key} --name …`",
    ("create", "template", ""): "save one with `newsletter templates save {key} …`",
    ("list", "token", ""): "`newsletter tokens list` shows the ids",
    ("update", "list", "postal_address"): (
        "for the list: `newsletter lists update {key} --postal-address '…'`"
    ),
    # ("give", operation, field): the option of the command that takes that field.
    ("give", "article import", "site_url"): "`--site-url` gives the old site's address",
    ("give", "series insert", "at"): "`--at` is the position",
    ("choose", "campaign content", ""): (
        "the options are --articles, --latest, --series, --since-last, --tag"
    ),
    ("choose", "campaign schedule", ""): "give `--at TIME`, `--now` or `--cron EXPR`",
    ("give", "campaign schedule", "at"): "`--at` takes the time, read in `--tz`",
    ("choose", "sequence timing", ""): "give `--every PERIOD` or `--cron EXPR`",
    ("give", "sequence", "every"): "`--every` takes the period",
    ("give", "sequence", "delay"): "`--delay` takes the period",
    ("give", "subscriber import", "map"): "`--map` takes the mapping",
    ("give", "subscriber import", "email"): 'or map one with `--map "<column>=email"`',
    ("give", "subscriber import", "status"): "`--status` takes it",
    ("choose", "subscriber import", "status"): "or give one for every row with `--status`",
}


def with_hint(error: NewsletterError | Problem) -> str:
    """The error's (or item's) message, then the command that fixes it when the CLI
    has one."""
    advice = _advice(error.remedy)
    return f"{error}; {advice}" if advice else str(error)


def _advice(remedy: Remedy | None) -> str:
    if remedy is None:
        return ""
    advice = COMMANDS.get((remedy.action, remedy.thing, remedy.field))
    return advice.format(key=remedy.key) if advice else ""
