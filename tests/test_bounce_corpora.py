"""The classifier on public bounce corpora other than our own (tests/data/bounces).

Each corpus in tests/data/bounce-corpora/ is a public project's test messages, copied
byte for byte with its licence, and a labels.csv we wrote from each message's content
(see the README there). A message counts as classified as labelled when its kind and
its recipients are the label's. We require 95% on each corpus and, whatever the
accuracy, that no auto-reply or human message is ever taken for a hard bounce (that
would suppress a reader who is there).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from newsletter.bounces.dsn import Kind, classify

CORPORA = Path(__file__).parent / "data" / "bounce-corpora"
NAMES = sorted(p.name for p in CORPORA.iterdir() if (p / "labels.csv").exists())
THRESHOLD = 0.95


def labels(corpus: str) -> list[dict[str, str]]:
    with (CORPORA / corpus / "labels.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def outcome(corpus: str, row: dict[str, str]) -> tuple[str, str]:
    report = classify((CORPORA / corpus / row["file"]).read_bytes())
    return report.kind.value, ";".join(r.address for r in report.recipients)


def misclassified(corpus: str) -> list[str]:
    wrong = []
    for row in labels(corpus):
        got = outcome(corpus, row)
        if got != (row["kind"], row["recipient"]):
            wrong.append(f"{row['file']}: {got}, labelled {(row['kind'], row['recipient'])}")
    return wrong


def test_there_are_at_least_two_corpora_each_fully_labelled() -> None:
    assert len(NAMES) >= 2
    for corpus in NAMES:
        files = sorted(
            p.name for p in (CORPORA / corpus).iterdir() if p.name not in ("LICENSE", "labels.csv")
        )
        assert files == sorted(row["file"] for row in labels(corpus))
        assert (CORPORA / corpus / "LICENSE").read_text(encoding="utf-8").strip()
        assert {row["kind"] for row in labels(corpus)} <= {k.value for k in Kind}


@pytest.mark.parametrize("corpus", NAMES)
def test_corpus_is_classified_as_labelled(corpus: str) -> None:
    wrong = misclassified(corpus)
    total = len(labels(corpus))

    accuracy = (total - len(wrong)) / total
    assert accuracy >= THRESHOLD, "\n".join(wrong)


@pytest.mark.parametrize("corpus", NAMES)
def test_no_auto_reply_or_human_message_is_a_hard_bounce(corpus: str) -> None:
    replies = [row for row in labels(corpus) if row["kind"] in ("autoreply", "not-bounce")]

    hard = [row["file"] for row in replies if outcome(corpus, row)[0] == Kind.hard.value]
    assert hard == []
