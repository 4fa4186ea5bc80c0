"""Every mapped class, imported in one place for Alembic and for tests."""

from newsletter.audience.models import (
    BounceEvent,
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
)
from newsletter.campaigns.models import (
    Campaign,
    CampaignStatus,
    ContentKind,
    Run,
    RunStatus,
    Template,
    campaign_lists,
)
from newsletter.content.models import Article, Feed, Series
from newsletter.db import Base
from newsletter.delivery.models import Delivery, DeliveryStatus
from newsletter.sequences.models import Enrollment, EnrollmentStatus, Sequence, SequenceStatus

__all__ = [
    "Article",
    "Base",
    "BounceEvent",
    "Campaign",
    "CampaignStatus",
    "ContentKind",
    "Delivery",
    "DeliveryStatus",
    "Enrollment",
    "EnrollmentStatus",
    "Feed",
    "MailingList",
    "OptIn",
    "Run",
    "RunStatus",
    "Sequence",
    "SequenceStatus",
    "Series",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "Template",
    "campaign_lists",
]
