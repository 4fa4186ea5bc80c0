"""The command that fixes an error, added to its message on the terminal.

Domain errors say what is wrong in words every face can show, and may carry what
fixes it as data (`errors.Remedy`); only here does a remedy become a `newsletter …`
command, so the API and the console never advise one.
"""

from __future__ import annotations

from newsletter.errors import NewsletterError

# (action, thing, field) → the advice; `{key}` is the remedy's key.
COMMANDS: dict[tuple[str, str, str], str] = {
    ("create", "list", ""): "create it with `newsletter lists create {key} --name …`",
    ("create", "template", ""): "save one with `newsletter templates save {key} …`",
    ("list", "token", ""): "`newsletter tokens list` shows the ids",
    ("update", "list", "postal_address"): (
        "for the list: `newsletter lists update {key} --postal-address '…'`"
    ),
}


def with_hint(error: NewsletterError) -> str:
    """The error's message, then the command that fixes it when the CLI has one."""
    remedy = error.remedy
    if remedy is None:
        return str(error)
    advice = COMMANDS.get((remedy.action, remedy.thing, remedy.field))
    if advice is None:
        return str(error)
    return f"{error}; {advice.format(key=remedy.key)}"
