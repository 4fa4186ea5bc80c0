"""Roles and scopes: what each member of staff, and each of their tokens, may do.

A scope is `<area>:<verb>`. Every area has `read` and `write`; campaigns also have
`send` (schedule, resume, cancel, test-send) and `pause`, because the people who
write a campaign and the people who decide it goes out are often not the same:

| role    | may                                                                 |
|---------|---------------------------------------------------------------------|
| admin   | everything, including users, tokens of others and the audit log     |
| editor  | articles, series, templates, segments and campaign drafts; reads    |
|         | the rest                                                            |
| sender  | schedules, pauses, resumes, cancels and test-sends campaigns; runs  |
|         | drip sequences; reads content, lists, subscribers and deliveries    |
| analyst | reads everything but users and the audit log (reports, exports)     |
| ops     | reads status, runs, deliveries and metrics; pauses a campaign;      |
|         | sends failed deliveries again                                       |

A token's scopes are checked against its owner's role when it is made *and* on
every request, so a demoted user's tokens lose what the new role does not allow.
"""

from __future__ import annotations

import enum

from newsletter.errors import InvalidInputError

AREAS = (
    "articles",
    "series",
    "lists",
    "subscribers",
    "segments",
    "campaigns",
    "sequences",
    "templates",
    "reports",
    "deliveries",
    "webhooks",
    "users",
    "metrics",
)
EXTRA_VERBS = {"campaigns": ("send", "pause")}
# Areas that are only ever read: `metrics:read` is what a Prometheus token needs and
# all it may do (no address, no content).
READ_ONLY_AREAS = frozenset({"metrics"})


class Role(enum.StrEnum):
    admin = "admin"
    editor = "editor"
    sender = "sender"
    analyst = "analyst"
    ops = "ops"


def _scopes(area: str) -> tuple[str, ...]:
    if area in READ_ONLY_AREAS:
        return (f"{area}:read",)
    return (f"{area}:read", f"{area}:write", *(f"{area}:{v}" for v in EXTRA_VERBS.get(area, ())))


ALL_SCOPES: tuple[str, ...] = tuple(scope for area in AREAS for scope in _scopes(area))
_READ_ALL_BUT_USERS = frozenset(f"{area}:read" for area in AREAS if area != "users")

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.admin: frozenset(ALL_SCOPES),
    Role.editor: _READ_ALL_BUT_USERS
    | {"articles:write", "series:write", "templates:write", "campaigns:write", "segments:write"},
    Role.sender: _READ_ALL_BUT_USERS | {"campaigns:send", "campaigns:pause", "sequences:write"},
    Role.analyst: _READ_ALL_BUT_USERS,
    Role.ops: frozenset(
        {
            "campaigns:read",
            "deliveries:read",
            "deliveries:write",  # failed deliveries sent again (audited)
            "reports:read",
            "sequences:read",
            "campaigns:pause",
            "metrics:read",
        }
    ),
}
# Roles whose users may be limited to some lists.
LIST_SCOPED_ROLES = frozenset({Role.editor, Role.sender})


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError as exc:
        names = ", ".join(r.value for r in Role)
        raise InvalidInputError(f"role {value!r} is not one of {names}") from exc


def check_scopes(scopes: list[str] | tuple[str, ...], role: Role) -> list[str]:
    """The scopes, checked and without repeats; InvalidInputError for an unknown scope
    or one the role does not have."""
    if not scopes:
        raise InvalidInputError("scopes: a token needs at least one, e.g. campaigns:read")
    checked: dict[str, None] = {}
    for scope in scopes:
        if scope not in ALL_SCOPES:
            raise InvalidInputError(
                f"scope {scope!r} is not <area>:<read|write> with an area among "
                f"{', '.join(AREAS)} (campaigns also has :send and :pause)"
            )
        if scope not in ROLE_SCOPES[role]:
            raise InvalidInputError(f"scope {scope!r} is more than the {role.value} role allows")
        checked[scope] = None
    return list(checked)


def effective_scopes(role: str, token_scopes: list[str] | None = None) -> frozenset[str]:
    """What a user (or one of their tokens) may do now: the role's scopes, narrowed to
    the token's."""
    allowed = ROLE_SCOPES.get(Role(role), frozenset()) if role in Role.__members__ else frozenset()
    return allowed if token_scopes is None else allowed & frozenset(token_scopes)
