"""Email addresses as we store them: one canonical spelling per mailbox.

The canonical form is the whole address in lower case, with the domain in ASCII
(IDNA 2008 / UTS 46, through email-validator). RFC 5321 lets a receiving server treat
"Ann" and "ann" as two mailboxes, but no provider a newsletter reaches does, and a
list holding both spellings mails one person twice, misses their unsubscribe or
their suppression, and brings a forgotten person back. So sign-up, imports,
suppressions, forgetting, rate limits and webhooks all go through `normalise_email`,
and the database keeps one row per canonical address (a unique index on lower(email)).

Our own checks come first, for the mistakes people make, with short messages that
name the problem; email-validator then checks the rest of the syntax and the
internationalised domain.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

from newsletter.errors import InvalidInputError

MAX_ADDRESS = 254  # octets, RFC 5321 path limit minus the angle brackets
MAX_LOCAL_PART = 64
MAX_DOMAIN = 253
MAX_LABEL = 63

# RFC 5322 atext plus the dots of a dot-atom; non-ASCII letters are allowed too (RFC 6531).
_LOCAL_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~.")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def normalise_email(raw: str) -> str:
    """The canonical address: surrounding whitespace removed, lower-cased, the domain
    in ASCII (IDNA).

    Raises InvalidInputError (with a short reason) for anything that is not a plain
    `local@domain` address: quoted local parts and IP-literal domains included.
    """
    address = raw.strip()
    if not address or "@" not in address:
        raise InvalidInputError("not an email address")
    if any(char.isspace() or unicodedata.category(char).startswith("C") for char in address):
        raise InvalidInputError("contains spaces or control characters")
    if '"' in address:
        raise InvalidInputError("quoted local parts are not supported")
    if address.count("@") > 1:
        raise InvalidInputError("more than one '@'")
    local, domain = address.split("@")
    _check_local_part(local)
    ascii_domain = _normalise_domain(domain)
    if len(local.encode("utf-8")) + 1 + len(ascii_domain) > MAX_ADDRESS:
        raise InvalidInputError("too long")
    try:
        checked = validate_email(
            f"{local}@{ascii_domain}",
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise InvalidInputError(reason[:1].lower() + reason[1:]) from exc
    return f"{checked.local_part.lower()}@{checked.ascii_domain.lower()}"


def legacy_spelling(raw: str) -> str:
    """How addresses were stored before they were canonical: the local part as typed,
    the domain lower-cased. Only for matching the hashes of people forgotten then."""
    local, _, domain = raw.strip().rpartition("@")
    return f"{local}@{normalise_email(raw).rpartition('@')[2]}" if local and domain else raw


def _check_local_part(local: str) -> None:
    if not local:
        raise InvalidInputError("nothing before the '@'")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise InvalidInputError("part before the '@' is too long")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidInputError("misplaced dot before the '@'")
    for char in local:
        if not (char.isalnum() or char in _LOCAL_SPECIALS):
            raise InvalidInputError(f"character {char!r} not allowed before the '@'")


def _normalise_domain(domain: str) -> str:
    """The domain lower-cased and in ASCII (IDNA), with every label checked."""
    if not domain:
        raise InvalidInputError("nothing after the '@'")
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            # The codec lower-cases (nameprep) and punycodes each label.
            ascii_domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise InvalidInputError("domain is not a valid international name") from exc
    if "." not in ascii_domain:
        raise InvalidInputError("domain has no dot")
    if len(ascii_domain) > MAX_DOMAIN:
        raise InvalidInputError("domain too long")
    labels = ascii_domain.split(".")
    for label in labels:
        if len(label) > MAX_LABEL or not _LABEL_RE.match(label):
            raise InvalidInputError("domain is not a valid host name")
    if labels[-1].isdigit():
        raise InvalidInputError("domain is not a valid host name")
    return ascii_domain


def email_hash(address: str) -> str:
    """The hash a forgotten address leaves in Suppression.email_hash: hex SHA-256 of
    the canonical address's UTF-8."""
    return hashlib.sha256(address.encode("utf-8")).hexdigest()


def forgotten_hashes(raw: str) -> tuple[str, ...]:
    """The hashes a forgotten person with this address may have left: of the canonical
    address, and of the spelling addresses had before they were canonical."""
    canonical = normalise_email(raw)
    return tuple(dict.fromkeys((email_hash(canonical), email_hash(legacy_spelling(raw)))))
