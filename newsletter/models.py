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
from newsletter.bounces.models import WebhookSignature
from newsletter.campaigns.models import (
    Campaign,
    CampaignStatus,
    ContentKind,
    Template,
    campaign_lists,
)
from newsletter.content.models import Article, Feed, Series
from newsletter.db import Base
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus
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
    "WebhookSignature",
    "campaign_lists",
]
