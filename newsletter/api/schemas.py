"""What the API takes and gives: the models its OpenAPI document is generated from."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
MAX_ID = 2**31 - 1

Slug = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = []


class Page(BaseModel, Generic[T]):
    """One page of a keyset-paginated collection; `next_cursor` (also in the Link
    header, rel="next") fetches the next, null on the last page."""

    items: list[T]
    next_cursor: str | None = None


# --- accounts --------------------------------------------------------------------------


class LoginIn(Strict):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    totp_code: str | None = Field(default=None, max_length=10)


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: str
    disabled: bool
    totp: bool = Field(description="A second factor is on: logging in needs a code.")
    totp_pending: bool = Field(
        default=False, description="A second factor is set up and waits for its first code."
    )
    list_ids: list[int] | None = None
    created_at: str | None = None


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str
    expires_at: datetime


class MeOut(BaseModel):
    user: UserOut
    via: str
    scopes: list[str]


class UserIn(Strict):
    email: str = Field(min_length=3, max_length=320)
    role: Literal["admin", "editor", "sender", "analyst", "ops"]
    name: str = Field(default="", max_length=300)
    password: str | None = Field(default=None, min_length=12, max_length=1024)
    lists: list[str] | None = Field(default=None, max_length=1000)


class UserPatch(Strict):
    role: Literal["admin", "editor", "sender", "analyst", "ops"] | None = None
    name: str | None = Field(default=None, max_length=300)
    disabled: bool | None = None
    lists: list[str] | None = Field(default=None, max_length=1000)
    all_lists: bool = False  # lift the list scope


class PasswordIn(Strict):
    password: str = Field(min_length=12, max_length=1024)


class TotpOut(BaseModel):
    """A second factor being set up: not on until confirmed with a code from the app."""

    provisioning_uri: str = Field(description="otpauth:// URI for the app (or a QR code).")
    secret: str = Field(description="The same secret in base32, for typing in by hand.")
    user: UserOut


class TotpConfirmIn(Strict):
    code: str = Field(min_length=1, max_length=10, description="The code the app shows now.")


class TokenIn(Strict):
    user: str | None = Field(default=None, max_length=320, description="Owner; default: you.")
    scopes: list[str] = Field(min_length=1, max_length=50)
    name: str = Field(default="", max_length=200)
    expires: str | None = Field(default=None, max_length=10, description="e.g. 90d, 12h, 2w")


class TokenOut(BaseModel):
    id: int
    prefix: str
    name: str
    user: str
    scopes: list[str]
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    revoked: bool


class TokenCreated(TokenOut):
    token: str = Field(description="The secret, shown this once.")


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    user_id: int | None
    via: str
    ip: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any]


# --- audience --------------------------------------------------------------------------


class ListIn(Strict):
    slug: str = Slug
    name: str = Field(min_length=1, max_length=300)
    opt_in: Literal["single", "double"] = "double"
    description: str = Field(default="", max_length=2000)
    tracking: Literal["off", "anonymous", "individual"] = "anonymous"
    track_opens: bool = False


class ListOut(BaseModel):
    id: int
    slug: str
    name: str
    opt_in: str
    description: str
    confirmed: int
    tracking: str = "anonymous"
    track_opens: bool = False


class PersonIn(Strict):
    email: str = Field(min_length=1, max_length=320)
    name: str = Field(default="", max_length=300)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)


class BulkIn(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    list_slug: str = Field(
        alias="list", min_length=1, max_length=200, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
    )
    subscribers: list[PersonIn] = Field(min_length=1, max_length=10_000)


class ProblemItem(BaseModel):
    where: str
    reason: str


class ImportReportOut(BaseModel):
    created: int
    updated: int
    unchanged: int
    problems: list[ProblemItem]
    warnings: list[ProblemItem] = []
    drafts: int = 0


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    timezone: str | None
    attributes: dict[str, Any]
    soft_bounces: int
    created_at: str | None
    lists: dict[str, str]


class EmailIn(Strict):
    email: str = Field(min_length=1, max_length=320)


class ForgetOut(BaseModel):
    subscriber: bool
    subscriptions: int
    enrollments: int
    deliveries: int
    bounce_events: int
    suppression: str
    tracking_events: int = 0


class ImportJobOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    list_slug: str = Field(alias="list")
    filename: str
    dry_run: bool
    status: str
    progress: float
    rows: int
    created: int
    updated: int
    unchanged: int
    problems: list[ProblemItem]
    created_at: str | None
    finished_at: str | None


class SuppressionIn(Strict):
    email: str = Field(min_length=1, max_length=320)
    detail: str = Field(default="", max_length=2000)


class SuppressionOut(BaseModel):
    id: int
    email: str | None
    hashed: bool
    reason: str
    detail: str
    created_at: str | None


class BounceOut(BaseModel):
    id: int
    source: str
    email: str
    kind: str
    detail: str
    received_at: str | None


# --- content ---------------------------------------------------------------------------


class ArticleIn(Strict):
    slug: str = Slug
    title: str = Field(min_length=1, max_length=500)
    summary: str = Field(default="", max_length=10_000)
    body_markdown: str = Field(default="", max_length=1_000_000)
    author: str = Field(default="", max_length=300)
    url: str = Field(default="", max_length=2000)
    image: str = Field(default="", max_length=2000)
    published: str | None = Field(default=None, max_length=40, description="ISO time; none: draft")
    series: str | None = Field(default=None, max_length=200)
    series_title: str | None = Field(default=None, max_length=500)
    position: int | None = Field(default=None, ge=1, le=2**31 - 1)
    tags: list[str] = Field(default_factory=list, max_length=100)


class ArticleOut(BaseModel):
    slug: str
    title: str
    summary: str
    author: str
    url: str
    image: str
    published_at: str | None
    tags: list[str]
    series: str | None
    position: int | None


class MarkdownDocument(Strict):
    name: str = Field(min_length=1, max_length=300, description="A file name, e.g. tms.md")
    text: str = Field(max_length=1_000_000, description="Front matter and Markdown body")


class MarkdownIn(Strict):
    documents: list[MarkdownDocument] = Field(min_length=1, max_length=500)


class FeedImportIn(Strict):
    url: str = Field(min_length=1, max_length=2000)
    series: str | None = Field(default=None, max_length=200)


class SeriesIn(Strict):
    slug: str = Slug
    title: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=10_000)


class SeriesArticle(BaseModel):
    position: int | None
    slug: str
    title: str
    published: bool


class SeriesOut(BaseModel):
    slug: str
    title: str
    articles: list[SeriesArticle]


class SeriesOrderIn(Strict):
    articles: list[str] = Field(min_length=1, max_length=10_000)


class SeriesInsertIn(Strict):
    article: str = Field(min_length=1, max_length=200)
    at: int = Field(ge=1, le=100_000)


# --- campaigns -------------------------------------------------------------------------


class ContentIn(Strict):
    articles: list[str] | None = Field(default=None, max_length=100)
    latest: int = Field(default=0, ge=0, le=100)
    series: str | None = Field(default=None, max_length=200)
    since_last: bool = False
    tag: str | None = Field(default=None, max_length=200)


class CampaignIn(Strict):
    name: str = Field(min_length=1, max_length=300)
    lists: list[str] = Field(min_length=1, max_length=100)
    subject: str = Field(min_length=1, max_length=998)
    content: ContentIn
    template: str = Field(default="digest", min_length=1, max_length=200)
    preheader: str = Field(default="", max_length=500)
    tracking: Literal["off", "anonymous", "individual"] | None = None
    track_opens: bool | None = None
    segment: str | None = Field(default=None, max_length=200, description="a segment's slug")


class CampaignPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=300)
    lists: list[str] | None = Field(default=None, min_length=1, max_length=100)
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    content: ContentIn | None = None
    template: str | None = Field(default=None, min_length=1, max_length=200)
    preheader: str | None = Field(default=None, max_length=500)
    tracking: Literal["off", "anonymous", "individual"] | Literal[""] | None = None
    track_opens: bool | None = None
    segment: str | None = Field(
        default=None, max_length=200, description='a segment\'s slug; "" removes it'
    )


class LinkOut(BaseModel):
    position: int
    url: str
    destination: str


class LinkIn(Strict):
    destination: str = Field(min_length=1, max_length=4000)


class TrackingIn(Strict):
    email: str = Field(min_length=1, max_length=320)
    track: bool


class TrackingOut(BaseModel):
    email: str
    track: bool


class RunOut(BaseModel):
    run: int
    campaign: int | None
    sequence: int | None
    name: str
    status: str
    occurrence_at: str
    recipients: int
    error: str
    pending: int = 0
    sending: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0
    cancelled: int = 0
    left: int
    rate_per_second: float
    eta_seconds: float | None


class CampaignOut(BaseModel):
    id: int
    name: str
    status: str
    subject: str
    template: str
    content: dict[str, Any]
    lists: list[str]
    segment: str | None = None
    send_at: str | None
    cron: str | None
    timezone: str
    skip_if_empty: bool
    local_time: bool
    tracking: dict[str, Any] = {}
    articles: list[str]
    runs: list[RunOut]


class CampaignSummary(BaseModel):
    id: int
    name: str
    status: str
    send_at: str | None


class ScheduleIn(Strict):
    at: str | None = Field(default=None, max_length=40, description="ISO time, read in timezone")
    timezone: str = Field(default="UTC", max_length=64)
    now: bool = False
    cron: str | None = Field(default=None, max_length=100)
    skip_if_empty: bool = False
    local_time: bool = False


class ScheduledOut(BaseModel):
    campaign: CampaignOut
    message: str


class TestSendIn(Strict):
    to: str = Field(min_length=3, max_length=320)


class TestSendOut(BaseModel):
    to: str
    reply: str


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


class DeliveryOut(BaseModel):
    id: int
    run: int
    campaign: int | None
    subscriber: int
    email: str
    status: str
    attempts: int
    smtp_reply: str
    message_id: str
    sent_at: str | None
    next_attempt_at: str | None
    updated_at: str | None


# --- templates, sequences ---------------------------------------------------------------


class TemplateIn(Strict):
    subject: str = Field(default="", max_length=200_000)
    html: str = Field(min_length=1, max_length=200_000)
    text: str = Field(default="", max_length=200_000)


class TemplateOut(BaseModel):
    name: str
    created_at: str | None
    updated_at: str | None
    sizes: dict[str, int]
    subject: str | None = None
    html: str | None = None
    text: str | None = None


class SequenceIn(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    series: str = Field(min_length=1, max_length=200)
    list_slug: str = Field(alias="list", min_length=1, max_length=200)
    every: str | None = Field(default=None, max_length=20)
    cron: str | None = Field(default=None, max_length=100)
    timezone: str = Field(default="UTC", max_length=64)
    delay: str | None = Field(default=None, max_length=20)
    restart_on_rejoin: bool = False
    segment: str | None = Field(default=None, max_length=200, description="a segment's slug")


class SequenceOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    series: str
    list_slug: str = Field(alias="list")
    every_seconds: int | None
    cron: str | None
    timezone: str
    initial_delay_seconds: int
    segment: str | None = None
    status: str
    enrollments: dict[str, int]


RULES_HELP = (
    'the rule tree as JSON ({"match": "all", "rules": [{"field": "attr.city", '
    '"op": "eq", "value": "Oslo"}]}) or its one-line form '
    "(attr.city=Oslo and clicked_within=30d)"
)


class SegmentIn(Strict):
    slug: str = Field(min_length=1, max_length=200, pattern="^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=2000)
    rules: dict[str, Any] | str = Field(description=RULES_HELP)


class SegmentPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=2000)
    rules: dict[str, Any] | str | None = Field(default=None, description=RULES_HELP)


class SegmentOut(BaseModel):
    id: int
    slug: str
    name: str
    description: str
    rules: dict[str, Any]
    line: str
    created_at: str
    updated_at: str
    count: int | None = None


class SegmentCountIn(Strict):
    rules: dict[str, Any] | str = Field(description=RULES_HELP)
    lists: list[str] = Field(default=[], max_length=100, description="only their confirmed members")


class SegmentCountOut(BaseModel):
    count: int
    line: str


class WebhookIn(Strict):
    url: str = Field(min_length=1, max_length=2000, description="https:// on a public host")
    events: list[str] = Field(min_length=1, max_length=50, description="event names, or *")
    description: str = Field(default="", max_length=500)


class WebhookPatch(Strict):
    enabled: bool | None = None
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[str] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=500)


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    enabled: bool
    failure_count: int
    failing_since: str | None
    disabled_reason: str
    secret_hint: str
    created_at: str


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret, shown only now")


class WebhookTestOut(BaseModel):
    event_id: str
    message: str


class WebhookAttemptOut(BaseModel):
    id: int
    event: str
    event_id: str
    attempted_at: str
    ok: bool
    status_code: int | None
    duration_ms: int
    error: str
    response_excerpt: str
    event_status: str
    attempts: int
