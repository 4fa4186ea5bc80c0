"""Every mapped class, imported in one place for Alembic and for tests."""

from newsletter.accounts.models import (
    ApiToken,
    AuditEntry,
    IdempotentRequest,
    StaffSession,
    User,
)
from newsletter.audience.models import (
    BounceEvent,
    ImportJob,
    MailingList,
    OptIn,
    Segment,
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
from newsletter.events.models import WebhookAttempt, WebhookEndpoint, WebhookOutbox
from newsletter.runs.models import Delivery, DeliveryStatus, Run, RunStatus, SchedulerHeartbeat
from newsletter.sequences.models import Enrollment, EnrollmentStatus, Sequence, SequenceStatus
from newsletter.tracking.models import (
    TrackedLink,
    TrackedMessage,
    TrackedMessageLink,
    TrackingEvent,
    TrackingRollup,
)

__all__ = [
    "ApiToken",
    "Article",
    "AuditEntry",
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
    "IdempotentRequest",
    "ImportJob",
    "MailingList",
    "OptIn",
    "Run",
    "RunStatus",
    "SchedulerHeartbeat",
    "Segment",
    "Sequence",
    "SequenceStatus",
    "Series",
    "StaffSession",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "Template",
    "TrackedLink",
    "TrackedMessage",
    "TrackedMessageLink",
    "TrackingEvent",
    "TrackingRollup",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookOutbox",
    "WebhookSignature",
    "campaign_lists",
]
