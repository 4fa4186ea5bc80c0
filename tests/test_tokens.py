"""Signed link tokens: only a genuine, unexpired token of the right purpose is accepted."""

from __future__ import annotations

import time

import pytest

from newsletter.audience.tokens import InvalidTokenError, Purpose, TokenSigner
from newsletter.errors import InvalidInputError

SECRET = "test-secret"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_token_round_trips_its_claims(signer: TokenSigner, purpose: Purpose) -> None:
    token = signer.sign(purpose, subscriber_id=42, scope=7)

    claims = signer.verify(token, purpose)

    assert (claims.purpose, claims.subscriber_id, claims.scope) == (purpose, 42, 7)
    assert claims.expires_at == 0


def test_token_is_url_safe(signer: TokenSigner) -> None:
    token = signer.sign(Purpose.unsubscribe, 123456789, 987654321, ttl_seconds=3600)

    assert token.isascii()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


@pytest.mark.parametrize(
    ("signed_for", "used_for"),
    [(a, b) for a in Purpose for b in Purpose if a is not b],
)
def test_token_for_one_purpose_is_refused_for_another(
    signer: TokenSigner, signed_for: Purpose, used_for: Purpose
) -> None:
    token = signer.sign(signed_for, 1, 1)

    with pytest.raises(InvalidTokenError):
        signer.verify(token, used_for)


def test_payload_of_another_token_with_this_signature_is_refused(signer: TokenSigner) -> None:
    mine = signer.sign(Purpose.unsubscribe, 1, 1)
    theirs = signer.sign(Purpose.unsubscribe, 2, 1)
    forged = f"{theirs.split('.')[0]}.{mine.split('.')[1]}"

    with pytest.raises(InvalidTokenError):
        signer.verify(forged, Purpose.unsubscribe)


def test_altered_payload_is_refused(signer: TokenSigner) -> None:
    payload, signature = signer.sign(Purpose.unsubscribe, 1, 1).split(".")
    altered = ("B" if payload[0] == "A" else "A") + payload[1:]

    with pytest.raises(InvalidTokenError):
        signer.verify(f"{altered}.{signature}", Purpose.unsubscribe)


@pytest.mark.parametrize("position", [0, 10, -1])
def test_altered_signature_is_refused(signer: TokenSigner, position: int) -> None:
    payload, signature = signer.sign(Purpose.unsubscribe, 1, 1).split(".")
    chars = list(signature)
    chars[position] = "B" if chars[position] == "A" else "A"

    with pytest.raises(InvalidTokenError):
        signer.verify(f"{payload}.{''.join(chars)}", Purpose.unsubscribe)


def test_truncated_signature_is_refused(signer: TokenSigner) -> None:
    token = signer.sign(Purpose.unsubscribe, 1, 1)

    with pytest.raises(InvalidTokenError):
        signer.verify(token[:-1], Purpose.unsubscribe)


def test_token_signed_with_another_secret_is_refused() -> None:
    token = TokenSigner("another-secret").sign(Purpose.unsubscribe, 1, 1)

    with pytest.raises(InvalidTokenError):
        TokenSigner(SECRET).verify(token, Purpose.unsubscribe)


def test_token_is_accepted_until_it_expires(signer: TokenSigner) -> None:
    before = int(time.time())
    token = signer.sign(Purpose.confirm, 1, 1, ttl_seconds=3600)
    after = int(time.time())

    expires_at = signer.verify(token, Purpose.confirm, now=before).expires_at

    assert before + 3600 <= expires_at <= after + 3600
    assert signer.verify(token, Purpose.confirm, now=expires_at - 1).subscriber_id == 1
    assert signer.verify(token, Purpose.confirm, now=expires_at).subscriber_id == 1


def test_expired_token_is_refused(signer: TokenSigner) -> None:
    token = signer.sign(Purpose.confirm, 1, 1, ttl_seconds=60)
    expires_at = signer.verify(token, Purpose.confirm).expires_at

    with pytest.raises(InvalidTokenError, match="expired"):
        signer.verify(token, Purpose.confirm, now=expires_at + 1)


def test_token_without_ttl_never_expires(signer: TokenSigner) -> None:
    token = signer.sign(Purpose.unsubscribe, 1, 1)

    far_future = time.time() + 100 * 365 * 24 * 3600
    assert signer.verify(token, Purpose.unsubscribe, now=far_future).subscriber_id == 1


def test_invalid_token_error_is_invalid_input() -> None:
    # The web layer shows InvalidInputError as a friendly page, not a server error.
    assert issubclass(InvalidTokenError, InvalidInputError)


GARBAGE = [
    "",
    ".",
    "..",
    "abc",
    "abc.",
    ".abc",
    "a.b.c",
    "abc.def",
    "====.====",
    "%%%.%%%",
    "\x00",
    "\x00.\x00",
    " ",
    "x" * 10_000,
    "x" * 10_000 + "." + "y" * 10_000,
]

# A token arrives in a URL path; a non-ASCII one must be refused like any other.
NON_ASCII_GARBAGE = ["é.abc", "abc.é", "🙂", "é", "abc.\udcff", "\u00a0.abc"]


@pytest.mark.parametrize("token", [*GARBAGE, *NON_ASCII_GARBAGE])
def test_garbage_is_refused_with_invalid_token_error(signer: TokenSigner, token: str) -> None:
    with pytest.raises(InvalidTokenError):
        signer.verify(token, Purpose.unsubscribe)


def test_genuine_token_with_a_non_ascii_character_is_refused(signer: TokenSigner) -> None:
    payload, signature = signer.sign(Purpose.unsubscribe, 1, 1).split(".")

    for token in (f"é{payload}.{signature}", f"{payload}.{signature}é", f"{payload}é.{signature}"):
        with pytest.raises(InvalidTokenError):
            signer.verify(token, Purpose.unsubscribe)


def test_genuine_token_with_garbage_appended_is_refused(signer: TokenSigner) -> None:
    token = signer.sign(Purpose.unsubscribe, 1, 1)

    for suffix in (".", ".x", "x", "=", " "):
        with pytest.raises(InvalidTokenError):
            signer.verify(token + suffix, Purpose.unsubscribe)


def test_a_next_step_link_names_a_sequence_and_other_links_a_list(signer: TokenSigner) -> None:
    step = signer.verify(signer.sign(Purpose.next_step, 42, 3), Purpose.next_step)
    leave = signer.verify(signer.sign(Purpose.unsubscribe, 42, 7), Purpose.unsubscribe)

    assert (step.sequence_id, leave.list_id) == (3, 7)
    with pytest.raises(InvalidTokenError):
        _ = step.list_id
    with pytest.raises(InvalidTokenError):
        _ = leave.sequence_id
