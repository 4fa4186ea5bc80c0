"""Generated subscribers for the demo and the benchmark (fast bulk inserts)."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList, Subscriber, Subscription, SubscriptionStatus
from newsletter.db import utcnow

_FIRST = [
    "Alex",
    "Sam",
    "Robin",
    "Maria",
    "Jonas",
    "Amira",
    "Wei",
    "Noah",
    "Lena",
    "Zoë",
    "Kofi",
    "Inés",
]
_LAST = ["Meyer", "Okafor", "Lind", "García", "Chen", "Novak", "Haddad", "Brown", "Sato", "Rossi"]


def generate_subscribers(
    session: Session,
    mailing_list: MailingList,
    count: int,
    domain: str = "example.org",
    batch: int = 5000,
) -> int:
    """Add `count` confirmed subscribers reader<N>@domain to the list; returns how many.

    Numbering continues after the addresses that exist, so running it twice grows the list.
    """
    now = utcnow()
    start = session.scalar(select(func.count()).select_from(Subscriber)) or 0
    created = 0
    for offset in range(0, count, batch):
        numbers = range(start + offset, start + min(offset + batch, count))
        rows = [
            {
                "email": f"reader{n:07d}@{domain}",
                "name": f"{_FIRST[n % len(_FIRST)]} {_LAST[(n // len(_FIRST)) % len(_LAST)]}",
                "attributes": {"source": "generated"},
                "created_at": now,
            }
            for n in numbers
        ]
        ids = session.scalars(insert(Subscriber).returning(Subscriber.id), rows).all()
        session.execute(
            insert(Subscription),
            [
                {
                    "subscriber_id": sid,
                    "list_id": mailing_list.id,
                    "status": SubscriptionStatus.confirmed,
                    "source": "generated",
                    "created_at": now,
                    "confirmed_at": now,
                }
                for sid in ids
            ],
        )
        created += len(ids)
    session.flush()
    return created
