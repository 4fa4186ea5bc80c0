"""Every mapped class, imported in one place for Alembic and for tests."""

from newsletter.audience.models import (
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
from newsletter.content.models import Article, Series
from newsletter.db import Base
from newsletter.delivery.models import Delivery, DeliveryStatus

__all__ = [
    "Article",
    "Base",
    "Campaign",
    "CampaignStatus",
    "ContentKind",
    "Delivery",
    "DeliveryStatus",
    "MailingList",
    "OptIn",
    "Run",
    "RunStatus",
    "Series",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "Template",
    "campaign_lists",
]
