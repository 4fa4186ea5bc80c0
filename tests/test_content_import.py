"""Importing Markdown articles, and reading series order from what was imported."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.content.importer import import_articles
from newsletter.content.models import Article, Series
from newsletter.content.series import (
    get_article,
    get_series,
    published_in_order,
    series_place,
)
from newsletter.errors import NotFoundError, Problem

SAMPLE = Path(__file__).resolve().parent.parent / "newsletter" / "sample" / "articles"
SAMPLE_SLUGS = [
    "ketamine-infusions",
    "infusion-appointment",
    "continuing-care",
    "tms",
    "after-treatment",
]


def write_article(folder: Path, name: str, front_matter: str, body: str = "Body.\n") -> Path:
    """Write `name` in `folder` with the given front-matter lines between '---' lines."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front_matter.strip()}\n---\n{body}", encoding="utf-8")
    return path


def article_count(session: Session) -> int:
    return session.scalar(select(func.count(Article.id))) or 0


# --- the shipped sample -------------------------------------------------------------


def test_sample_folder_imports_five_articles_in_one_series(session: Session) -> None:
    report = import_articles(session, [SAMPLE])

    assert (report.created, report.updated, report.unchanged) == (5, 0, 0)
    assert report.problems == []
    series = get_series(session, "understanding-treatment")
    assert series.title == "Understanding treatment options"
    in_order = published_in_order(session, series.id)
    assert [a.slug for a in in_order] == SAMPLE_SLUGS
    assert [a.position for a in in_order] == [1, 2, 3, 4, 5]


def test_sample_article_fields_are_imported(session: Session) -> None:
    import_articles(session, [SAMPLE])

    article = get_article(session, "ketamine-infusions")
    assert article.title == "Ketamine infusions: what they are and what the evidence says"
    assert article.author == "Riverside Clinic care team"
    assert article.url == "https://clinic.example/articles/ketamine-infusions"
    assert article.published_at == datetime(2026, 9, 7, 9, 0, tzinfo=UTC)
    assert article.tags == ["depression", "chronic-pain", "ketamine"]
    assert "<h2>What a ketamine infusion is</h2>" in article.body_html
    assert "<li>" in article.body_html


def test_series_place_gives_index_total_and_neighbours(session: Session) -> None:
    import_articles(session, [SAMPLE])

    place = series_place(session, get_article(session, "continuing-care"))

    assert place is not None
    assert (place.index, place.total) == (3, 5)
    assert place.series_slug == "understanding-treatment"
    assert place.series_title == "Understanding treatment options"
    assert place.previous is not None and place.previous.slug == "infusion-appointment"
    assert place.next is not None and place.next.slug == "tms"


def test_first_article_has_no_previous_and_last_has_no_next(session: Session) -> None:
    import_articles(session, [SAMPLE])

    first = series_place(session, get_article(session, "ketamine-infusions"))
    last = series_place(session, get_article(session, "after-treatment"))

    assert first is not None and last is not None
    assert first.previous is None
    assert first.next is not None and first.next.slug == "infusion-appointment"
    assert (first.index, first.total) == (1, 5)
    assert last.next is None
    assert last.previous is not None and last.previous.slug == "tms"
    assert (last.index, last.total) == (5, 5)


# --- re-importing -------------------------------------------------------------------


def test_reimport_updates_existing_article(session: Session, tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    shutil.copytree(SAMPLE, folder)
    import_articles(session, [folder])
    write_article(folder, "04-tms.md", "title: TMS, revised\nslug: tms\nseries: other-series")

    report = import_articles(session, [folder])

    assert (report.created, report.updated, report.unchanged) == (0, 1, 4)
    assert article_count(session) == 5
    article = get_article(session, "tms")
    assert article.title == "TMS, revised"
    assert article.series is not None and article.series.slug == "other-series"
    assert article.position == 1


def test_reimport_of_unchanged_files_changes_nothing(session: Session) -> None:
    import_articles(session, [SAMPLE])
    before = {a.slug: a.updated_at for a in session.scalars(select(Article))}

    report = import_articles(session, [SAMPLE])

    assert (report.created, report.updated, report.unchanged) == (0, 0, 5)
    assert article_count(session) == 5
    assert session.scalar(select(func.count(Series.id))) == 1
    session.expire_all()
    assert {a.slug: a.updated_at for a in session.scalars(select(Article))} == before


def test_series_title_in_a_later_import_retitles_the_series(
    session: Session, tmp_path: Path
) -> None:
    write_article(tmp_path, "a.md", "title: A\nseries: first-steps")
    import_articles(session, [tmp_path])
    assert get_series(session, "first-steps").title == "First Steps"

    write_article(tmp_path, "a.md", "title: A\nseries: first-steps\nseries_title: Getting started")
    import_articles(session, [tmp_path])

    assert get_series(session, "first-steps").title == "Getting started"


# --- sanitising ---------------------------------------------------------------------


def test_script_tags_and_event_handlers_are_stripped(session: Session, tmp_path: Path) -> None:
    body = (
        "Hello <script>alert('body')</script>\n\n"
        '<p onclick="steal()">Click</p>\n\n'
        '<a href="javascript:steal()">bad link</a> [good](https://example.org "Example")\n\n'
        '<iframe src="https://evil.example"></iframe><style>p{color:red}</style>\n'
    )
    write_article(tmp_path, "unsafe.md", "title: Unsafe", body)

    import_articles(session, [tmp_path])

    html = get_article(session, "unsafe").body_html
    for forbidden in (
        "<script",
        "alert(",
        "onclick",
        "steal()",
        "javascript:",
        "<iframe",
        "<style",
    ):
        assert forbidden not in html
    assert "<p>Click</p>" in html
    assert (
        '<a href="https://example.org" title="Example" rel="noopener noreferrer">good</a>' in html
    )


def test_markdown_headings_lists_and_tables_survive_sanitising(
    session: Session, tmp_path: Path
) -> None:
    body = "## Sub\n\n1. one\n2. two\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n> quoted `code`\n"
    write_article(tmp_path, "rich.md", "title: Rich", body)

    import_articles(session, [tmp_path])

    html = get_article(session, "rich").body_html
    assert "<h2>Sub</h2>" in html
    assert "<ol>\n<li>one</li>" in html
    assert '<td style="text-align:right">2</td>' in html
    assert "<blockquote>" in html and "<code>code</code>" in html


def test_title_and_summary_are_stored_as_plain_text(session: Session, tmp_path: Path) -> None:
    write_article(
        tmp_path,
        "plain.md",
        'title: "<b>Bold</b> &amp; brave<script>x()</script>"\n'
        "summary: \"A <a href='https://x.example'>linked</a>   summary\"",
    )

    import_articles(session, [tmp_path])

    article = get_article(session, "plain")
    assert article.title == "Bold & brave"
    assert article.summary == "A linked summary"


# --- bad files ----------------------------------------------------------------------


def test_yaml_error_names_file_and_line_while_good_files_import(
    session: Session, tmp_path: Path
) -> None:
    write_article(tmp_path, "a-good.md", "title: Good one")
    bad = write_article(tmp_path, "b-bad.md", "title: Bad\nsummary: a: b")
    write_article(tmp_path, "c-good.md", "title: Good two")

    report = import_articles(session, [tmp_path])

    assert report.created == 2
    assert report.problems == [
        Problem(where=f"{bad}:3", reason="YAML error: mapping values are not allowed here")
    ]
    assert {a.slug for a in session.scalars(select(Article))} == {"a-good", "c-good"}


@pytest.mark.parametrize(
    ("front_matter", "line", "reason"),
    [
        ("summary: no title", None, "title is missing"),
        ("title: T\npublished: 2026-13-01", 3, "published '2026-13-01' is not an ISO-8601"),
        ("title: T\npublished: next tuesday", 3, "is not an ISO-8601 date or time"),
        ("title: T\nseries: s\nposition: 0", 4, "position must be a whole number of 1 or more"),
        ("title: T\nseries: s\nposition: two", 4, "position must be a whole number"),
        ("title: T\nslug: Not_A_Slug", 3, "slug 'Not_A_Slug' must be lower-case"),
        ("title: T\nurl: javascript:alert(1)", 3, "url must be an http(s) address"),
        ("title: T\ntags: {a: 1}", 3, "tags must be a list or comma-separated text"),
    ],
)
def test_invalid_field_skips_the_file_and_names_its_line(
    session: Session, tmp_path: Path, front_matter: str, line: int | None, reason: str
) -> None:
    bad = write_article(tmp_path, "bad.md", front_matter)

    report = import_articles(session, [bad])

    assert report.created == 0
    assert article_count(session) == 0
    assert session.scalar(select(func.count(Series.id))) == 0  # nothing partial
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert problem.where == (f"{bad}:{line}" if line else str(bad))
    assert reason in problem.reason


def test_file_without_front_matter_is_reported(session: Session, tmp_path: Path) -> None:
    bad = tmp_path / "plain.md"
    bad.write_text("# Just Markdown\n", encoding="utf-8")
    unclosed = tmp_path / "unclosed.md"
    unclosed.write_text("---\ntitle: T\nNo closing line\n", encoding="utf-8")

    report = import_articles(session, [tmp_path])

    assert [p.where for p in report.problems] == [f"{bad}:1", f"{unclosed}:1"]
    assert "no front matter" in report.problems[0].reason
    assert "never closed" in report.problems[1].reason
    assert article_count(session) == 0


def test_missing_path_is_reported(session: Session, tmp_path: Path) -> None:
    report = import_articles(session, [tmp_path / "nowhere"])

    assert report.problems == [Problem(str(tmp_path / "nowhere"), "no such file or folder")]


def test_unknown_field_is_reported_but_article_imported(session: Session, tmp_path: Path) -> None:
    path = write_article(tmp_path, "x.md", "title: T\ncolour: blue")

    report = import_articles(session, [path])

    assert report.created == 1
    assert report.problems == []
    assert report.warnings == [Problem(f"{path}:3", "unknown field 'colour' ignored")]


def test_second_file_with_the_same_slug_is_skipped(session: Session, tmp_path: Path) -> None:
    first = write_article(tmp_path, "a.md", "title: First\nslug: same")
    second = write_article(tmp_path, "b.md", "title: Second\nslug: same")

    report = import_articles(session, [tmp_path])

    assert report.created == 1
    assert report.problems == [
        Problem(str(second), f"slug 'same' is already used by {first} in this import; skipped")
    ]
    assert get_article(session, "same").title == "First"


# --- field defaults -----------------------------------------------------------------


def test_slug_defaults_to_the_slugified_file_name(session: Session, tmp_path: Path) -> None:
    write_article(tmp_path, "sub/Héllo World!.markdown", "title: T")
    (tmp_path / "notes.txt").write_text("not markdown", encoding="utf-8")

    report = import_articles(session, [tmp_path])

    assert report.created == 1
    assert get_article(session, "hello-world").title == "T"


def test_published_without_zone_is_utc_and_a_date_means_midnight(
    session: Session, tmp_path: Path
) -> None:
    write_article(tmp_path, "a.md", "title: A\npublished: 2026-03-01T08:30:00")
    write_article(tmp_path, "b.md", "title: B\npublished: 2026-03-02")
    write_article(tmp_path, "c.md", "title: C\npublished: 2026-03-03T10:00:00+02:00")
    write_article(tmp_path, "d.md", "title: D")

    import_articles(session, [tmp_path])

    assert get_article(session, "a").published_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert get_article(session, "b").published_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert get_article(session, "c").published_at == datetime(2026, 3, 3, 8, tzinfo=UTC)
    assert get_article(session, "d").published_at is None


def test_tags_may_be_comma_separated_text(session: Session, tmp_path: Path) -> None:
    write_article(tmp_path, "a.md", "title: A\ntags: sleep, mood ,sleep,")

    import_articles(session, [tmp_path])

    assert get_article(session, "a").tags == ["sleep", "mood"]


def test_missing_position_appends_after_the_series_last(session: Session, tmp_path: Path) -> None:
    write_article(tmp_path, "a.md", "title: A\nseries: s\nposition: 4")
    write_article(tmp_path, "b.md", "title: B\nseries: s")
    write_article(tmp_path, "c.md", "title: C\nseries: s")

    import_articles(session, [tmp_path])
    report = import_articles(session, [tmp_path])

    assert [get_article(session, slug).position for slug in "abc"] == [4, 5, 6]
    assert report.unchanged == 3  # an appended article keeps its place on re-import


# --- series order -------------------------------------------------------------------


def test_draft_is_skipped_by_previous_and_next(session: Session, tmp_path: Path) -> None:
    write_article(tmp_path, "one.md", "title: One\nseries: s\nposition: 1\npublished: 2026-01-01")
    write_article(tmp_path, "two.md", "title: Two\nseries: s\nposition: 2")
    write_article(
        tmp_path, "three.md", "title: Three\nseries: s\nposition: 3\npublished: 2026-01-03"
    )
    import_articles(session, [tmp_path])

    first = series_place(session, get_article(session, "one"))
    third = series_place(session, get_article(session, "three"))

    assert first is not None and third is not None
    assert first.next is not None and first.next.slug == "three"
    assert third.previous is not None and third.previous.slug == "one"
    assert (third.index, third.total) == (2, 2)
    assert series_place(session, get_article(session, "two")) is None


def test_future_article_joins_the_series_when_its_time_comes(
    session: Session, tmp_path: Path
) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    write_article(tmp_path, "one.md", "title: One\nseries: s\npublished: 2026-01-01")
    write_article(tmp_path, "two.md", f"title: Two\nseries: s\npublished: {soon.isoformat()}")
    import_articles(session, [tmp_path])
    one = get_article(session, "one")
    series_id = get_series(session, "s").id

    assert [a.slug for a in published_in_order(session, series_id)] == ["one"]
    later = soon + timedelta(minutes=1)
    assert [a.slug for a in published_in_order(session, series_id, now=later)] == ["one", "two"]
    place = series_place(session, one, now=later)
    assert place is not None and place.next is not None and place.next.slug == "two"


def test_article_outside_any_series_has_no_place(session: Session, tmp_path: Path) -> None:
    write_article(tmp_path, "solo.md", "title: Solo\npublished: 2026-01-01")
    import_articles(session, [tmp_path])

    assert series_place(session, get_article(session, "solo")) is None


def test_unknown_slugs_raise_not_found(session: Session) -> None:
    with pytest.raises(NotFoundError, match="no series 'nope'"):
        get_series(session, "nope")
    with pytest.raises(NotFoundError, match="no article 'nope'"):
        get_article(session, "nope")


def test_an_images_alt_text_comes_from_front_matter_else_the_title(
    session: Session, tmp_path: Path
) -> None:
    from newsletter.content.views import article_view
    from newsletter.rendering.model import EmailContent, Sender
    from newsletter.rendering.render import render_email

    write_article(
        tmp_path,
        "with-alt.md",
        "title: Sleep and mood\nimage: https://clinic.example/sleep.jpg\n"
        "image_alt: A reader asleep by a window\npublished: 2026-09-01",
    )
    write_article(
        tmp_path,
        "without-alt.md",
        "title: Eating well\nimage: https://clinic.example/food.jpg\npublished: 2026-09-02",
    )
    assert import_articles(session, [tmp_path]).problems == []
    views = tuple(
        article_view(session, a, "https://news.example.org")
        for a in session.scalars(select(Article).order_by(Article.id))
    )

    html = render_email(
        "digest",
        EmailContent(
            subject="News",
            preheader="",
            articles=views,
            list_name="Clinic news",
            sender_name="Riverside Clinic",
            web_url="https://news.example.org/archive",
            sender=Sender("Riverside Clinic", "12 River Road, Springfield"),
        ),
    ).html

    assert 'alt="A reader asleep by a window"' in html
    assert 'alt="Eating well"' in html
    assert 'alt=""' not in html
