"""The one outgoing-message pipeline: template → recipient values → MIME → DKIM → mailer.

Campaign runs, drip steps, test sends and confirmation emails all go through it:

1. a `MessageTemplate` (rendering/mime.py): the email encoded once, list or
   transactional headers;
2. `prepare`: one recipient's values spliced in (`MessageTemplate.build`), then the
   DKIM signature when a key is configured → an `OutgoingMessage`;
3. `send`: the mailer hands it over, or raises a DeliveryError whose class says what
   to do (mailers.py).

A recipient whose values cannot go in a message (an address that needs SMTPUTF8, a
line break in a name) is an InvalidInputError at step 2, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import parseaddr

from newsletter.config import Settings
from newsletter.delivery.dkim import DkimSigner, signer_from_settings
from newsletter.delivery.mailers import Handed, Mailer, OutgoingMessage, SendResult, send_each
from newsletter.delivery.relays import single_mailer
from newsletter.rendering.mime import MessageTemplate, Recipient


@dataclass
class Outgoing:
    """Prepares and sends messages for one sender (envelope, DKIM key) and mailer."""

    envelope_from: str
    mailer: Mailer
    dkim: DkimSigner | None = None

    @classmethod
    def from_settings(cls, settings: Settings, mailer: Mailer | None = None) -> Outgoing:
        """The sender the settings configure; the mailer of `NEWSLETTER_MAIL_URL` unless
        one is given."""
        return cls(
            parseaddr(settings.from_address)[1],
            mailer if mailer is not None else single_mailer(settings.mail_targets),
            signer_from_settings(settings),
        )

    def prepare(
        self, template: MessageTemplate, recipient: Recipient, date: str | None = None
    ) -> OutgoingMessage:
        """One recipient's message, signed; InvalidInputError when it cannot be built."""
        data = template.build(recipient, date)
        if self.dkim is not None:
            data = self.dkim.sign(data)
        # The template vouches for what follows the recipient's headers; those (and
        # the signature's) are looked at here, a few hundred bytes.
        head = data.find(b"\r\n\r\n")
        dot_free = template.dot_free and head > 0 and data.find(b"\n.", 0, head) < 0
        return OutgoingMessage(
            self.envelope_from,
            recipient.email,
            data,
            recipient.message_id,
            dot_free and not data.startswith(b"."),
        )

    def send(self, message: OutgoingMessage) -> SendResult:
        return self.mailer.send(message)

    def send_many(self, messages: Iterable[OutgoingMessage]) -> Iterator[Handed]:
        return send_each(self.mailer, messages)

    def deliver(self, template: MessageTemplate, recipient: Recipient) -> SendResult:
        """Prepare and send one message at once (test sends, confirmations)."""
        return self.send(self.prepare(template, recipient))

    def close(self) -> None:
        self.mailer.close()
