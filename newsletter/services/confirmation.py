"""The double opt-in confirmation email: built from fixed wording, sent once.

Anyone can make us send this email to any address, so it carries no text the
requester chose except the address itself: not their name, not a message. The
list names are ours (set by staff), the wording is the template's.

Steps, each a short function: sign one expiring link for all the lists the signup
asked for → render the text and HTML templates (the layout every email shares, its
CSS inlined), with the address as a per-recipient slot → the outgoing pipeline
(delivery/outgoing.py: MIME, DKIM, mailer), as a transactional message: no
List-Unsubscribe, the reader is not on any list yet.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList, Subscriber, Subscription, SubscriptionStatus
from newsletter.audience.signup import Confirmation, ListToConfirm, is_suppressed
from newsletter.audience.tokens import Purpose, TokenSigner
from newsletter.config import MailTarget, Settings, SmtpTarget
from newsletter.delivery.dkim import DkimSigner, signer_from_settings
from newsletter.delivery.mailers import Mailer
from newsletter.delivery.outgoing import Outgoing
from newsletter.delivery.relays import single_mailer
from newsletter.errors import DeliveryError, InvalidInputError
from newsletter.rendering.inline import inline_css
from newsletter.rendering.library import TemplateLibrary, template_library
from newsletter.rendering.mime import MessageTemplate, Recipient, SenderHeaders, new_message_id
from newsletter.rendering.model import Sender, Snapshot
from newsletter.rendering.slots import new_marker, sentinel

log = logging.getLogger(__name__)

SUBJECT = "Please confirm your subscription"
# A confirmation waits for the relay at most this long per step (connect, each reply),
# whatever the SMTP URL's timeout: it is one email, and others wait behind it.
CONFIRMATION_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ConfirmationLink:
    """The one link that confirms every list named."""

    list_names: tuple[str, ...]
    url: str


@dataclass(frozen=True)
class ConfirmationSender:
    """What a confirmation needs, resolved once per app from the settings."""

    from_address: str  # the From header, e.g. "Riverside Clinic <news@clinic.example>"
    sender_name: str
    sender: Sender  # the organisation and postal address its footer shows
    base_url: str
    sender_domain: str  # right-hand side of Message-IDs
    ttl_seconds: int  # how long a confirmation link works
    library: TemplateLibrary
    envelope_from: str
    dkim: DkimSigner | None
    make_mailer: Callable[[], Mailer]  # a fresh mailer per email (sent from any thread)

    @classmethod
    def from_settings(
        cls, settings: Settings, ttl_seconds: int | None = None
    ) -> ConfirmationSender:
        """The settings' sender; links live `ttl_seconds` (default the setting's)."""
        return cls(
            from_address=settings.from_address,
            sender_name=settings.sender_name,
            sender=Sender(settings.organization_name, settings.postal_address),
            base_url=settings.base_url,
            sender_domain=settings.sender_domain,
            ttl_seconds=settings.confirm_ttl_seconds if ttl_seconds is None else ttl_seconds,
            library=template_library(settings.templates_dir),
            envelope_from=parseaddr(settings.from_address)[1],
            dkim=signer_from_settings(settings),
            make_mailer=lambda: single_mailer([_bounded(t) for t in settings.mail_targets]),
        )

    def outgoing(self) -> Outgoing:
        return Outgoing(self.envelope_from, self.make_mailer(), self.dkim)


def _bounded(target: MailTarget) -> MailTarget:
    if isinstance(target, SmtpTarget) and target.timeout > CONFIRMATION_TIMEOUT_SECONDS:
        return dataclasses.replace(target, timeout=CONFIRMATION_TIMEOUT_SECONDS)
    return target


def human_duration(seconds: int) -> str:
    """'3 days', '12 hours', '45 minutes': the largest unit that divides evenly."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def confirmation_link(
    signer: TokenSigner, sender: ConfirmationSender, confirmation: Confirmation
) -> ConfirmationLink:
    """One signed link that confirms every list to confirm, expiring after the TTL."""
    token = signer.sign_lists(
        Purpose.confirm,
        confirmation.subscriber_id,
        tuple(item.list_id for item in confirmation.lists),
        sender.ttl_seconds,
    )
    names = tuple(item.list_name for item in confirmation.lists)
    return ConfirmationLink(names, f"{sender.base_url}/confirm/{token}")


def confirmation_template(sender: ConfirmationSender, link: ConfirmationLink) -> MessageTemplate:
    """The email encoded once: fixed wording, our list names, the link; the address
    is a slot, filled as any recipient value is (never read as a template)."""
    return MessageTemplate(confirmation_snapshot(sender, link), SenderHeaders(sender.from_address))


def confirmation_snapshot(sender: ConfirmationSender, link: ConfirmationLink) -> Snapshot:
    """The confirmation's subject, inlined HTML and text, the address left as a slot."""
    marker = new_marker()
    context = {
        "subject": SUBJECT,
        "sender_name": sender.sender_name,
        "sender": sender.sender,
        "list_name": "",
        "preheader": "One click confirms your subscription.",
        "address": sentinel("email", marker),
        "list_names": link.list_names,
        "confirm_url": link.url,
        "valid_for": human_duration(sender.ttl_seconds),
    }
    return Snapshot(
        subject=SUBJECT,
        html=inline_css(sender.library.render("email/confirm.html", context)),
        text=sender.library.render("email/confirm.txt", context),
        fallbacks={},
        marker=marker,
    )


def send_confirmation(
    signer: TokenSigner, sender: ConfirmationSender, confirmation: Confirmation
) -> bool:
    """Build the confirmation and hand it to a fresh mailer; False (logged) on failure.

    Runs after the web answer was sent, so no failure can change that answer (which
    must not tell whether an address was mailed); the reader can simply ask again.
    """
    message_id = new_message_id(sender.sender_domain)
    outgoing = sender.outgoing()
    try:
        template = confirmation_template(sender, confirmation_link(signer, sender, confirmation))
        recipient = Recipient(confirmation.email, "", {"email": confirmation.email}, message_id)
        outgoing.deliver(template, recipient)
    except InvalidInputError as exc:
        log.error("confirmation for subscriber %s not built: %s", confirmation.subscriber_id, exc)
        return False
    except DeliveryError as exc:
        log.error("confirmation email %s not sent: %s", message_id, exc)
        return False
    finally:
        outgoing.close()
    return True


def pending_confirmation(
    session: Session, subscriber_id: int, list_ids: Sequence[int]
) -> Confirmation | None:
    """The confirmation still due for these lists, read again from the database (for a
    task that runs later): only lists still unconfirmed, and nothing for an address
    that was suppressed or forgotten meanwhile."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_suppressed(session, subscriber.email):
        return None
    rows = session.execute(
        select(MailingList.id, MailingList.name)
        .join(Subscription, Subscription.list_id == MailingList.id)
        .where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.unconfirmed,
        )
        .order_by(MailingList.id)
    ).all()
    if not rows:
        return None
    lists = tuple(ListToConfirm(list_id, name) for list_id, name in rows)
    return Confirmation(subscriber.id, subscriber.email, lists)
