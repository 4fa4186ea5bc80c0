"""Import articles from Markdown files that start with YAML front matter.

A file looks like this::

    ---
    title: "What happens at an infusion appointment"
    slug: infusion-appointment          # optional: defaults to the file name
    published: 2026-09-14T09:00:00Z     # optional: without it the article is a draft
    series: understanding-treatment     # optional: created on first mention
    position: 2                         # optional: appended to the series when missing
    tags: [ketamine, infusion]
    ---
    The body, in Markdown.

Reading a file (`parse_article_file`) never touches the database and reports
every problem it finds; saving (`import_articles`) upserts by slug, one savepoint
per file, so a rejected file leaves nothing behind and never stops the others.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import markdown
import nh3
import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from newsletter.content.models import Article, Series
from newsletter.errors import Problem
from newsletter.importing import ImportReport

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
KNOWN_FIELDS = frozenset(
    {
        "title",
        "slug",
        "summary",
        "author",
        "url",
        "image",
        "image_alt",
        "published",
        "series",
        "series_title",
        "position",
        "tags",
    }
)
# The YAML between the two '---' lines starts on the file's second line.
FRONT_MATTER_FIRST_LINE = 2
MAX_POSITION = 2**31 - 1  # an INTEGER column on PostgreSQL

_ARTICLE_TAG_GROUPS = (
    "h1 h2 h3 h4 h5 h6 p br hr div span",
    "strong b em i u s del ins mark small sub sup abbr cite q blockquote code pre kbd",
    "ul ol li dl dt dd a img figure figcaption",
    "table caption thead tbody tfoot tr th td colgroup col",
)
_ARTICLE_HTML = nh3.Cleaner(
    tags={tag for group in _ARTICLE_TAG_GROUPS for tag in group.split()},
    clean_content_tags={"script", "style", "iframe", "object", "embed", "noscript"},
    attributes={
        "a": {"href", "title"},
        "img": {"src", "alt", "title", "width", "height"},
        "abbr": {"title"},
        "ol": {"start"},
        "code": {"class"},  # language-* from fenced code blocks
        "sup": {"id"},  # footnote references and the notes they jump to
        "li": {"id"},
        "div": {"class"},
        "th": {"style", "colspan", "rowspan"},
        "td": {"style", "colspan", "rowspan"},
    },
    # Markdown tables align columns with inline styles; nothing else may style.
    filter_style_properties={"text-align"},
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer",
)
_NO_HTML = nh3.Cleaner(tags=set(), clean_content_tags={"script", "style"})


class _FrontMatterLoader(yaml.SafeLoader):
    """Safe YAML that leaves timestamps as text.

    PyYAML's own timestamp parsing raises a bare ValueError for "2026-13-01"; as text,
    a bad date becomes our problem to report with its line, like any other field.
    """


_FrontMatterLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class Outcome(Enum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"


@dataclass(frozen=True)
class ParsedArticle:
    """A valid article file, ready to be saved; text fields are already clean."""

    path: Path
    slug: str
    title: str
    summary: str
    author: str
    url: str
    image: str
    image_alt: str
    published_at: datetime | None
    series_slug: str | None
    series_title: str | None
    position: int | None
    tags: tuple[str, ...]
    body_html: str


def import_articles(session: Session, paths: Sequence[Path]) -> ImportReport:
    """Create or update one article per Markdown file and commit.

    Each path is a file or a folder searched recursively for *.md and *.markdown
    (sorted by path; names starting with a dot are skipped). Articles are matched by
    slug, so importing again updates them and never duplicates. A file with any error
    is skipped whole and reported as a Problem whose `where` is "path:line" when the
    line is known; warnings (unknown fields) are reported too, but the file is saved.
    """
    report = ImportReport()
    slug_owners: dict[str, Path] = {}
    for path in find_markdown_files(paths, report.problems):
        article, problems = parse_article_file(path)
        report.problems.extend(problems)
        if article is None:
            continue
        owner = slug_owners.setdefault(article.slug, path)
        if owner != path:
            reason = f"slug '{article.slug}' is already used by {owner} in this import; skipped"
            report.problems.append(Problem(str(path), reason))
            continue
        try:
            with session.begin_nested():
                outcome = save_article(session, article)
        except (IntegrityError, DataError) as exc:
            # A concurrent import of the same slug, or a value the database refuses.
            report.problems.append(Problem(str(path), f"could not be saved: {exc.orig}"))
            continue
        count_outcome(report, outcome)
    session.commit()
    return report


def find_markdown_files(paths: Sequence[Path], problems: list[Problem]) -> list[Path]:
    """The files to import, each once, in argument order then sorted by path.

    A path that does not exist is added to `problems`.
    """
    found: dict[Path, Path] = {}
    for root in paths:
        if root.is_dir():
            candidates = sorted(
                p
                for p in root.rglob("*")
                if p.suffix.lower() in MARKDOWN_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
        elif root.is_file():
            candidates = [root]
        else:
            problems.append(Problem(str(root), "no such file or folder"))
            continue
        for path in candidates:
            found.setdefault(path.resolve(), path)
    return list(found.values())


def parse_article_file(path: Path) -> tuple[ParsedArticle | None, list[Problem]]:
    """Read and validate one article file without touching the database.

    Returns the article (None when the file has an error) and every problem found,
    errors and warnings alike.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [Problem(str(path), f"not UTF-8 text (byte {exc.start}: {exc.reason})")]
    except OSError as exc:
        return None, [Problem(str(path), f"cannot read the file: {exc.strerror or exc}")]
    try:
        front_matter, body = split_front_matter(text)
        data, key_lines = _load_yaml(front_matter)
    except _Rejected as exc:
        return None, [Problem(_where(path, exc.line), exc.reason)]
    fields = _FieldReader(path, data, key_lines)
    article = fields.article(body)
    return article, fields.problems


def split_front_matter(text: str) -> tuple[str, str]:
    """Split a file into its YAML front matter and its Markdown body."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise _Rejected("no front matter: the first line must be '---'", line=1)
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    raise _Rejected("the front matter opened on line 1 is never closed by a '---' line", line=1)


def markdown_to_safe_html(body: str) -> str:
    """Markdown (with the `extra` and `sane_lists` extensions) as sanitised HTML.

    Scripts, styles, iframes, event handlers and non-http(s)/mailto links are
    removed; every link gets rel="noopener noreferrer".
    """
    rendered = markdown.markdown(body, extensions=["extra", "sane_lists"], output_format="html")
    return sanitize_html(rendered)


def sanitize_html(value: str) -> str:
    """Article HTML reduced to what `markdown_to_safe_html` allows, whatever its origin.

    Used for HTML that arrives as HTML (feed entries), so every article body passes
    the same sanitiser.
    """
    return str(_ARTICLE_HTML.clean(value)).strip()


def plain_text(value: str) -> str:
    """`value` without HTML tags or entities, with runs of whitespace made one space."""
    return " ".join(html.unescape(str(_NO_HTML.clean(value))).split())


def slugify(value: str) -> str:
    """Lower-case ASCII letters and digits joined by single hyphens ("" if none)."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def save_article(session: Session, parsed: ParsedArticle) -> Outcome:
    """Insert the article, or update the one with the same slug; say which.

    The series is created when it does not exist yet, and retitled when the file
    gives a different series_title.
    """
    article = session.scalar(select(Article).where(Article.slug == parsed.slug))
    series = (
        ensure_series(session, parsed.series_slug, parsed.series_title)
        if parsed.series_slug is not None
        else None
    )
    values: dict[str, Any] = {
        "slug": parsed.slug,
        "title": parsed.title,
        "summary": parsed.summary,
        "body_html": parsed.body_html,
        "author": parsed.author,
        "url": parsed.url,
        "image": parsed.image,
        "image_alt": parsed.image_alt,
        "published_at": parsed.published_at,
        "tags": list(parsed.tags),
        "series_id": series.id if series is not None else None,
        "position": _position(session, parsed, series, article),
        "source": str(parsed.path.resolve()),
    }
    return upsert_article(session, article, values)


def upsert_article(session: Session, article: Article | None, values: Mapping[str, Any]) -> Outcome:
    """Insert a new article from `values` when `article` is None, else set the values
    that differ from it; flush, and say which.

    The step shared by every importer: the caller finds the article (by slug, by feed
    guid…) and decides the values; an article whose values all match is left untouched,
    so its `updated_at` does not move.
    """
    if article is None:
        session.add(Article(**values))
        session.flush()
        return Outcome.created
    changed = {key: value for key, value in values.items() if getattr(article, key) != value}
    for key, value in changed.items():
        setattr(article, key, value)
    session.flush()
    return Outcome.updated if changed else Outcome.unchanged


def ensure_series(session: Session, slug: str, title: str | None = None) -> Series:
    """The series with this slug, created when missing (titled from the slug unless
    `title` is given) and retitled when `title` differs."""
    series = session.scalar(select(Series).where(Series.slug == slug))
    if series is None:
        series = Series(slug=slug, title=title or slug.replace("-", " ").title())
        session.add(series)
        session.flush()
    elif title and series.title != title:
        series.title = title
    return series


def next_position(session: Session, series: Series) -> int:
    """The position after the last article of the series (1 for an empty series)."""
    last = session.scalar(select(func.max(Article.position)).where(Article.series_id == series.id))
    return (last or 0) + 1


def _position(
    session: Session, parsed: ParsedArticle, series: Series | None, article: Article | None
) -> int | None:
    """The given position; else the article's current one; else after the series' last."""
    if series is None:
        return None
    if parsed.position is not None:
        return parsed.position
    if article is not None and article.series_id == series.id and article.position is not None:
        return article.position
    return next_position(session, series)


def count_outcome(report: ImportReport, outcome: Outcome) -> None:
    """Add one item with this outcome to the report's counts."""
    if outcome is Outcome.created:
        report.created += 1
    elif outcome is Outcome.updated:
        report.updated += 1
    else:
        report.unchanged += 1


class _Rejected(Exception):
    """The file cannot be read as an article at all."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _load_yaml(front_matter: str) -> tuple[dict[Any, Any], dict[str, int]]:
    """The front matter as a mapping, and the file line of each top-level key."""
    loader = _FrontMatterLoader(front_matter)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + FRONT_MATTER_FIRST_LINE if mark is not None else None
        raise _Rejected(f"YAML error: {exc.problem or exc.context}", line) from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise _Rejected(f"YAML error: {exc}") from exc
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Rejected("the front matter must be 'key: value' lines", FRONT_MATTER_FIRST_LINE)
    key_lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _value_node in node.value:
            key_lines[str(key_node.value)] = key_node.start_mark.line + FRONT_MATTER_FIRST_LINE
    return data, key_lines


class _FieldReader:
    """Validates front-matter fields one by one, collecting every problem."""

    def __init__(self, path: Path, data: dict[Any, Any], key_lines: dict[str, int]) -> None:
        self.path = path
        self.data = data
        self.key_lines = key_lines
        self.has_errors = False
        self._found: list[tuple[int, Problem]] = []

    @property
    def problems(self) -> list[Problem]:
        """Every problem found so far, in the order of the lines they are on."""
        return [problem for _line, problem in sorted(self._found, key=lambda found: found[0])]

    def article(self, body: str) -> ParsedArticle | None:
        for key in self.data:
            if key not in KNOWN_FIELDS:
                self._warn(str(key), f"unknown field '{key}' ignored")
        title = self._plain("title", max_length=500, required=True)
        slug = self._slug()
        summary = self._plain("summary")
        author = self._plain("author", max_length=300)
        url = self._url("url")
        image = self._url("image")
        image_alt = self._plain("image_alt", max_length=1000)
        published_at = self._published()
        series_slug = self._series()
        series_title = self._plain("series_title", max_length=500) or None
        position = self._position()
        tags = self._tags()
        if series_slug is None:
            if series_title is not None:
                self._warn("series_title", "series_title ignored: no series given")
            if position is not None:
                self._warn("position", "position ignored: no series given")
                position = None
        if self.has_errors:
            return None
        return ParsedArticle(
            path=self.path,
            slug=slug,
            title=title,
            summary=summary,
            author=author,
            url=url,
            image=image,
            image_alt=image_alt,
            published_at=published_at,
            series_slug=series_slug,
            series_title=series_title,
            position=position,
            tags=tags,
            body_html=markdown_to_safe_html(body),
        )

    def _error(self, key: str, reason: str) -> None:
        self.has_errors = True
        self._warn(key, reason)

    def _warn(self, key: str, reason: str) -> None:
        line = self.key_lines.get(key)
        self._found.append((line or 0, Problem(_where(self.path, line), reason)))

    def _scalar(self, key: str) -> str | None:
        """The field as stripped text; None when missing or null (error if not a scalar)."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self._error(key, f"{key} must be text, not {value!r}")
            return None
        return str(value).strip()

    def _plain(self, key: str, max_length: int | None = None, required: bool = False) -> str:
        if required and self.data.get(key) is None:
            self._error(key, f"{key} is missing")
            return ""
        raw = self._scalar(key)
        text = plain_text(raw) if raw is not None else ""
        if required and raw is not None and not text:
            self._error(key, f"{key} is empty")
        elif max_length is not None and len(text) > max_length:
            self._error(key, f"{key} is longer than {max_length} characters")
        return text

    def _slug(self) -> str:
        raw = self._scalar("slug")
        if raw is None:
            slug = slugify(self.path.stem)
            if not slug:
                self._error("slug", "cannot make a slug from the file name; add a 'slug' field")
            return slug
        if not SLUG_RE.match(raw) or len(raw) > 200:
            self._error("slug", f"slug {raw!r} must be lower-case letters, digits and hyphens")
        return raw

    def _url(self, key: str) -> str:
        raw = self._scalar(key) or ""
        if raw and not raw.lower().startswith(("http://", "https://")):
            self._error(key, f"{key} must be an http(s) address, not {raw!r}")
        elif len(raw) > 2000:
            self._error(key, f"{key} is longer than 2000 characters")
        return raw

    def _published(self) -> datetime | None:
        value = self.data.get("published")
        if value is None or value == "":
            return None
        try:
            # Timestamps reach us as text (see _FrontMatterLoader); a date means midnight.
            moment = datetime.fromisoformat(value.strip()) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            self._error("published", f"published {value!r} is not an ISO-8601 date or time")
            return None
        # A value without a zone is UTC: the importer must not depend on the server's zone.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def _series(self) -> str | None:
        raw = self._scalar("series")
        if not raw:
            return None
        if not SLUG_RE.match(raw) or len(raw) > 200:
            self._error("series", f"series {raw!r} must be a slug: lower-case letters, digits, -")
            return None
        return raw

    def _position(self) -> int | None:
        value = self.data.get("position")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POSITION:
            self._error("position", f"position must be a whole number of 1 or more, not {value!r}")
            return None
        return value

    def _tags(self) -> tuple[str, ...]:
        value = self.data.get("tags")
        if value is None:
            return ()
        if isinstance(value, str):
            items: list[Any] = value.split(",")
        elif isinstance(value, list):
            items = value
        else:
            self._error("tags", "tags must be a list or comma-separated text")
            return ()
        tags: dict[str, None] = {}  # ordered and without repeats
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                self._error("tags", f"tag {item!r} must be text")
                continue
            tag = str(item).strip()
            if tag:
                tags[tag] = None
        return tuple(tags)
