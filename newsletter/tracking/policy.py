"""Which tracking applies to whom: the list's mode is the default for its campaigns and
the most a campaign may use (a list's readers agreed to it, or not); a campaign may be
more private, never less; a reader who chose "don't track me" is never tracked.

A run freezes its policy (mode and pixel per list) when its first chunk is sent, so
every worker process sends one run the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from newsletter.audience.models import MailingList, TrackingMode
from newsletter.campaigns.models import Campaign
from newsletter.runs.models import Run
from newsletter.sequences.models import Sequence


@dataclass(frozen=True)
class Tracking:
    """How one recipient's message counts: its mode and whether it carries the pixel."""

    mode: TrackingMode
    opens: bool = False

    @property
    def on(self) -> bool:
        return self.mode is not TrackingMode.off

    @property
    def individual(self) -> bool:
        return self.mode is TrackingMode.individual


OFF = Tracking(TrackingMode.off)


def parse_mode(value: str) -> TrackingMode:
    """A mode by name; InvalidInputError naming the choices otherwise."""
    from newsletter.errors import InvalidInputError

    try:
        return TrackingMode(value)
    except ValueError as exc:
        raise InvalidInputError(
            f"tracking {value!r} is not one of off, anonymous, individual"
        ) from exc


def effective(
    list_mode: TrackingMode,
    list_opens: bool,
    campaign_mode: TrackingMode | None = None,
    campaign_opens: bool | None = None,
) -> Tracking:
    """A list's tracking as a campaign uses it: the campaign's mode when it is more
    private than the list's (never less), the campaign's pixel switch when it has one."""
    mode = list_mode
    if campaign_mode is not None and campaign_mode.rank < list_mode.rank:
        mode = campaign_mode
    if mode is TrackingMode.off:
        return OFF
    return Tracking(mode, list_opens if campaign_opens is None else campaign_opens)


@dataclass(frozen=True)
class RunPolicy:
    """A run's tracking per list (a recipient's ledger row names their list)."""

    lists: dict[int, Tracking]

    def for_recipient(self, list_id: int, no_tracking: bool) -> Tracking:
        if no_tracking:
            return OFF
        return self.lists.get(list_id, OFF)

    @property
    def any_on(self) -> bool:
        return any(t.on for t in self.lists.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "lists": {
                str(k): {"mode": t.mode.value, "opens": t.opens} for k, t in self.lists.items()
            }
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunPolicy:
        return cls(
            {
                int(k): Tracking(TrackingMode(v["mode"]), bool(v["opens"]))
                for k, v in data.get("lists", {}).items()
            }
        )


def current_policy(session: Session, run: Run) -> RunPolicy:
    """What the run's campaign (or drip sequence) and its lists say now."""
    if run.campaign_id is not None:
        campaign = session.get_one(Campaign, run.campaign_id)
        return RunPolicy(
            {
                ml.id: effective(
                    ml.tracking, ml.track_opens, campaign.tracking, campaign.track_opens
                )
                for ml in campaign.lists
            }
        )
    assert run.sequence_id is not None
    sequence = session.get_one(Sequence, run.sequence_id)
    ml = session.get_one(MailingList, sequence.list_id)
    return RunPolicy({ml.id: effective(ml.tracking, ml.track_opens)})


def run_policy(session: Session, run_id: int) -> RunPolicy:
    """The run's frozen policy, freezing what its settings say now on first use (the
    first writer wins, so concurrent workers agree). Flushes; the caller commits."""
    frozen = session.scalar(select(Run.tracking).where(Run.id == run_id))
    if frozen is not None:
        return RunPolicy.from_json(frozen)
    run = session.get_one(Run, run_id)
    policy = current_policy(session, run)
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.tracking.is_(None))
        .values(tracking=policy.to_json())
        .execution_options(synchronize_session=False)
    )
    session.flush()
    frozen = session.scalar(select(Run.tracking).where(Run.id == run_id))
    return RunPolicy.from_json(frozen) if frozen is not None else policy


# What the footer of a message says about its tracking (the `tracking_note` slot).
NOTES = {
    (TrackingMode.off, False): "This email counts no opens and no clicks.",
    (TrackingMode.anonymous, False): (
        "Clicks on its links are counted anonymously: how many, never who. "
        "You can turn this off in your preferences."
    ),
    (TrackingMode.anonymous, True): (
        "Opens and clicks are counted anonymously: how many, never who. "
        "You can turn this off in your preferences."
    ),
    (TrackingMode.individual, False): (
        "Clicks on its links are recorded for you, as this list's readers agreed. "
        "You can turn this off in your preferences."
    ),
    (TrackingMode.individual, True): (
        "Opens and clicks are recorded for you, as this list's readers agreed. "
        "You can turn this off in your preferences."
    ),
}
NO_TRACKING_NOTE = "You asked us not to track you: this email counts no opens and no clicks."


def note(tracking: Tracking, no_tracking: bool = False) -> str:
    """The footer's sentence for a message tracked this way."""
    if no_tracking:
        return NO_TRACKING_NOTE
    return NOTES[(tracking.mode, tracking.opens and tracking.on)]


def describe(tracking: Tracking) -> str:
    """A short description for staff and for the preferences page."""
    if not tracking.on:
        return "off: no opens, no clicks"
    what = "opens and clicks" if tracking.opens else "clicks"
    who = "per reader" if tracking.individual else "anonymously"
    return f"{tracking.mode.value}: {what} counted {who}"
