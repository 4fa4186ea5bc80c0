"""Reading one post file: our front matter, and the Jekyll and Hugo conventions.

Our own fields (title, slug, summary, author, url, image, published, series,
series_title, position, tags) keep their meaning. Around them, the fields and habits
of the two static-site generators people migrate from most:

- Jekyll: `date` (also `2013-11-26 10:00:00 +0100`), `published: false`, `category`,
  `categories` and `tags` (lists, or words separated by spaces), `excerpt`, the date
  and slug in the file name (`2013-11-26-title.md`, title from the name when the
  front matter has none), `_drafts/`, Liquid in the body.
- Hugo: TOML front matter, `date`, `publishDate`, `draft`, `expiryDate`, `summary`,
  `description`, list-valued `authors` and `series`, `weight` as the place in the
  series, `images`, page bundles (`post-name/index.md`), shortcodes in the body.

Reading never touches the database and reports every problem it finds, each with its
file and line: errors (the file is skipped) apart from warnings (it is imported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from newsletter.content.frontmatter import FrontMatterError, read_front_matter
from newsletter.content.shortcodes import render_blog_syntax
from newsletter.content.text import (
    SLUG_RE,
    absolute_links,
    markdown_to_safe_html,
    plain_text,
    slugify,
)
from newsletter.errors import Problem, Remedy

MAX_POSITION = 2**31 - 1  # an INTEGER column on PostgreSQL
OUR_FIELDS = frozenset(
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
BLOG_FIELDS = frozenset(
    {
        "date",
        "publishDate",
        "publishdate",
        "draft",
        "expiryDate",
        "expirydate",
        "excerpt",
        "description",
        "authors",
        "categories",
        "category",
        "weight",
        "images",
        "featured_image",
        "feature_image",
        "cover",
    }
)
# Fields that only shape the old site (layout, permalinks, menus…): ignored quietly.
SITE_FIELDS = frozenset(
    {
        "layout",
        "permalink",
        "comments",
        "share",
        "sharing",
        "aliases",
        "lastmod",
        "lastMod",
        "keywords",
        "type",
        "menu",
        "toc",
        "math",
        "mermaid",
        "sitemap",
        "redirect_from",
        "redirect_to",
        "excerpt_separator",
        "render_with_liquid",
        "hidden",
        "showToc",
        "TocOpen",
        "slug_prefix",
        "url_prefix",
    }
)
DRAFTS_FOLDER = "_drafts"
JEKYLL_FOLDERS = frozenset({"_posts", DRAFTS_FOLDER})
BUNDLE_NAMES = frozenset({"index.md", "index.markdown"})

_DATED_NAME = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})-(.+)$")
_MOMENT = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedArticle:
    """A valid article, ready to be saved; text fields are already clean.

    `where` names it in messages (a file, or an export and its post); `source` is what
    the article records as its origin.
    """

    where: str
    source: str
    slug: str
    title: str
    summary: str
    author: str
    url: str
    image: str
    published_at: datetime | None
    series_slug: str | None
    series_title: str | None
    position: int | None
    tags: tuple[str, ...]
    body_html: str
    image_alt: str = ""  # the image's alt text (else the title is used)


@dataclass
class Reading:
    """What reading one post gave: the article (None when it has an error), the errors
    that keep it out and the warnings about an article that is still imported."""

    article: ParsedArticle | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def parse_article_file(path: Path, now: datetime | None = None, site_url: str = "") -> Reading:
    """Read and validate one post file without touching the database.

    `now` decides whether a Hugo `expiryDate` has passed (default: the current time);
    `site_url`, the old site's address, makes its relative links and images absolute.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start}: {exc.reason})"
        return Reading(errors=[Problem(str(path), reason)])
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        return Reading(errors=[Problem(str(path), reason)])
    return parse_article_text(text, path, now, site_url)


def parse_article_text(
    text: str, path: Path, now: datetime | None = None, site_url: str = ""
) -> Reading:
    """Validate one post's text (front matter and Markdown) without touching the
    database; `path` names it in messages and, unless it has a `slug`, gives the slug."""
    try:
        front = read_front_matter(text.removeprefix("\ufeff"))
    except FrontMatterError as exc:
        return Reading(errors=[Problem(_where(str(path), exc.line), exc.reason)])
    fields = _PostFields(path, front.data, front.key_lines, now or datetime.now(UTC), site_url)
    article = fields.article(front.body)
    return Reading(article, fields.sorted(fields.errors), fields.sorted(fields.warnings))


def parse_article_fields(data: dict[str, Any], body: str, name: str = "article") -> Reading:
    """Validate an article given as fields (the front-matter names) and a Markdown body,
    as an API sends it; problems name the field."""
    fields = _PostFields(Path(name), data, dict.fromkeys(data, 0), datetime.now(UTC))
    article = fields.article(body)
    return Reading(article, fields.sorted(fields.errors), fields.sorted(fields.warnings))


def parse_moment(value: object) -> datetime | None:
    """A date or time as people write them in front matter, as an aware UTC datetime.

    Accepts ISO-8601 (`2026-03-01`, `2026-03-01T08:30:00+02:00`, `…Z`), Jekyll's
    `2026-03-01 08:30:00 +0200`, single-digit months and days, and TOML's own date
    values. A value without a zone is UTC; a date means midnight. None when `value`
    is not a date.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, str):
        return None
    found = _MOMENT.match(value.strip())
    if not found:
        return None
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=_zone(zone),
        )
    except ValueError:
        return None  # 2026-13-01, 25:00…
    return moment.astimezone(UTC)


def _zone(text: str | None) -> timezone:
    if text is None or text.upper() in ("Z", "UTC", "GMT"):
        return UTC
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text.startswith("-") else offset)


def _where(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else path


# What resolves links into the old site: its address, given with the import.
SITE_URL = Remedy("give", "article import", field="site_url")


def relative_links_warning(count: int) -> str:
    """The warning about links and images that point into a site the email is not on."""
    what = "link or image points" if count == 1 else "links or images point"
    return (
        f"{count} {what} into the old site (no address), which will not work in an "
        "email; import with the old site's address to resolve them"
    )


def titleize(slug: str) -> str:
    """The title Jekyll gives a post without one: its slug's words, capitalised."""
    return " ".join(word.capitalize() for word in slug.split("-") if word)


class _PostFields:
    """Validates a post's fields one by one, collecting every problem with its line."""

    def __init__(
        self,
        path: Path,
        data: dict[str, Any],
        key_lines: dict[str, int],
        now: datetime,
        site_url: str = "",
    ) -> None:
        self.path = path
        self.site_url = site_url
        self.data = data
        self.key_lines = key_lines
        self.now = now
        self.errors: list[tuple[int, Problem]] = []
        self.warnings: list[tuple[int, Problem]] = []
        self.dated_name = _DATED_NAME.match(path.stem)
        self.in_drafts = DRAFTS_FOLDER in path.parts
        self.jekyll = self.dated_name is not None or bool(JEKYLL_FOLDERS & set(path.parts))

    @staticmethod
    def sorted(found: list[tuple[int, Problem]]) -> list[Problem]:
        return [problem for _line, problem in sorted(found, key=lambda item: item[0])]

    def article(self, body: str) -> ParsedArticle | None:
        for key in self.data:
            if key not in OUR_FIELDS | BLOG_FIELDS | SITE_FIELDS:
                self._warn(key, f"unknown field '{key}' ignored")
        title = self._title()
        slug = self._slug()
        summary = self._summary()
        author = self._author()
        url = self._address("url")
        image = self._image()
        image_alt = self._plain("image_alt") if "image_alt" in self.data else ""
        published_at = self._published_at()
        series_slug, series_title = self._series()
        position = self._position(series_slug)
        tags = self._tags()
        if series_slug is None and series_title is not None:
            self._warn("series_title", "series_title ignored: no series given")
            series_title = None
        body_html = self._body(body)
        if self.errors:
            return None
        source = str(self.path.resolve())
        return ParsedArticle(
            where=str(self.path),
            source=source,
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
            body_html=body_html,
        )

    def _body(self, body: str) -> str:
        body_html, relative = absolute_links(
            markdown_to_safe_html(render_blog_syntax(body)), self.site_url
        )
        if relative:
            self._warn("", relative_links_warning(relative), SITE_URL)
        return body_html

    # --- reporting ---------------------------------------------------------------------

    def _error(self, key: str, reason: str) -> None:
        line = self.key_lines.get(key)
        self.errors.append((line or 0, Problem(_where(str(self.path), line), reason)))

    def _warn(self, key: str, reason: str, remedy: Remedy | None = None) -> None:
        line = self.key_lines.get(key)
        warning = Problem(_where(str(self.path), line), reason, remedy)
        self.warnings.append((line or 0, warning))

    def _first_present(self, *keys: str) -> str | None:
        return next((key for key in keys if self.data.get(key) not in (None, "")), None)

    def _scalar(self, key: str) -> str | None:
        """The field as stripped text; None when missing or null (error if not a scalar)."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self._error(key, f"{key} must be text, not {value!r}")
            return None
        return str(value).strip()

    def _plain(self, key: str, max_length: int | None = None) -> str:
        raw = self._scalar(key)
        text = plain_text(raw) if raw is not None else ""
        if max_length is not None and len(text) > max_length:
            self._error(key, f"{key} is longer than {max_length} characters")
        return text

    # --- fields --------------------------------------------------------------------------

    def _title(self) -> str:
        if self.data.get("title") is None:
            if self.dated_name is not None:
                # Jekyll's own rule for a post without a title.
                return titleize(self.dated_name.group(4))
            self._error("title", "title is missing")
            return ""
        title = self._plain("title", max_length=500)
        if not title and self._scalar("title") is not None:
            self._error("title", "title is empty")
        return title

    def _slug(self) -> str:
        raw = self._scalar("slug")
        if raw is not None:
            if not SLUG_RE.match(raw) or len(raw) > 200:
                self._error("slug", f"slug {raw!r} must be lower-case letters, digits and hyphens")
            return raw
        if self.path.name.lower() in BUNDLE_NAMES:
            stem = self.path.parent.name  # a Hugo page bundle: the folder names the post
        elif self.dated_name is not None:
            stem = self.dated_name.group(4)
        else:
            stem = self.path.stem
        slug = slugify(stem)[:200].strip("-")
        if not slug:
            self._error("slug", "cannot make a slug from the file name; add a 'slug' field")
        return slug

    def _summary(self) -> str:
        key = self._first_present("summary", "excerpt", "description")
        return self._plain(key) if key is not None else ""

    def _author(self) -> str:
        key = self._first_present("author", "authors")
        if key is None:
            return ""
        value = self.data[key]
        names = value if isinstance(value, list) else [value]
        found: list[str] = []
        for name in names:
            if isinstance(name, dict):
                name = name.get("name") or name.get("display_name")
            if isinstance(name, bool) or not isinstance(name, str | int | float):
                self._error(key, f"{key} must be a name or a list of names, not {value!r}")
                return ""
            if text := plain_text(str(name)):
                found.append(text)
        author = ", ".join(found)
        if len(author) > 300:
            self._error(key, f"{key} is longer than 300 characters")
        return author

    def _address(self, key: str, value: Any = None) -> str:
        """An http(s) address; a path on the old site is ignored with a warning."""
        raw = self._scalar(key) if value is None else str(value).strip()
        if not raw:
            return ""
        lowered = raw.lower()
        if lowered.startswith(("http://", "https://")):
            if len(raw) > 2000:
                self._error(key, f"{key} is longer than 2000 characters")
                return ""
            return raw
        if raw.startswith(("/", "./", "../")) or ":" not in raw.split("/")[0]:
            if self.site_url:
                return urljoin(self.site_url, raw)[:2000]
            self._warn(
                key,
                f"{key} {raw!r} is a path on the old site, not an address; ignored "
                "(import with the old site's address to resolve it)",
                SITE_URL,
            )
            return ""
        self._error(key, f"{key} must be an http(s) address, not {raw!r}")
        return ""

    def _image(self) -> str:
        key = self._first_present("image", "images", "featured_image", "feature_image", "cover")
        if key is None:
            return ""
        value = self.data[key]
        if isinstance(value, list):
            value = value[0] if value else ""
        if isinstance(value, dict):
            value = value.get("image") or value.get("path") or value.get("src") or ""
        if isinstance(value, bool) or not isinstance(value, str):
            self._error(key, f"{key} must be an address, not {value!r}")
            return ""
        return self._address(key, value)

    def _moment(self, key: str) -> datetime | None:
        value = self.data.get(key)
        if value is None or value == "":
            return None
        moment = parse_moment(value)
        if moment is None:
            self._error(key, f"{key} {value!r} is not an ISO-8601 date or time")
        return moment

    def _published_at(self) -> datetime | None:
        """When the article was (or will be) published; None for a draft."""
        published = self.data.get("published")
        explicit = None if isinstance(published, bool) else self._moment("published")
        key = self._first_present("publishDate", "publishdate", "date")
        moment = explicit or (self._moment(key) if key is not None else None)
        if moment is None and self.dated_name is not None:
            moment = parse_moment("-".join(self.dated_name.groups()[:3]))
        draft = self.data.get("draft")
        if draft is not None and not isinstance(draft, bool):
            self._error("draft", f"draft must be true or false, not {draft!r}")
        expiry = self._expiry()
        if published is False or draft is True or self.in_drafts:
            return None
        if expiry is not None and expiry <= self.now:
            expiry_key = self._first_present("expiryDate", "expirydate") or "expiryDate"
            self._warn(expiry_key, f"expired on {expiry:%Y-%m-%d}: imported as a draft")
            return None
        return moment

    def _expiry(self) -> datetime | None:
        key = self._first_present("expiryDate", "expirydate")
        if key is None:
            return None
        expiry = self._moment(key)
        if expiry is not None and expiry > self.now:
            self._warn(key, f"{key} is not applied: the article stays published after it")
        return expiry

    def _series(self) -> tuple[str | None, str | None]:
        """The series' slug, and its title when the file names it (or gives a name)."""
        value = self.data.get("series")
        if isinstance(value, list):
            names = [item for item in value if item not in (None, "")]
            if len(names) > 1:
                shown = ", ".join(str(name) for name in names)
                self._warn("series", f"in several series ({shown}): imported into the first")
            value = names[0] if names else None
        title = self._plain("series_title", max_length=500) or None
        if value is None or value == "":
            return None, title
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self._error("series", f"series must be a name or a slug, not {value!r}")
            return None, title
        raw = plain_text(str(value))
        if SLUG_RE.match(raw) and len(raw) <= 200:
            return raw, title
        slug = slugify(raw)[:200].strip("-")
        if not slug:
            self._error("series", f"cannot make a slug from series {raw!r}; use a slug")
            return None, title
        return slug, title or raw[:500]

    def _position(self, series_slug: str | None) -> int | None:
        value = self.data.get("position")
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= MAX_POSITION
            ):
                self._error(
                    "position", f"position must be a whole number of 1 or more, not {value!r}"
                )
                return None
            if series_slug is None:
                self._warn("position", "position ignored: no series given")
                return None
            return value
        weight = self.data.get("weight")
        # Hugo orders pages by weight; 0 (its default) and negative weights mean no place.
        if series_slug is not None and isinstance(weight, int) and not isinstance(weight, bool):
            return weight if 1 <= weight <= MAX_POSITION else None
        return None

    def _tags(self) -> tuple[str, ...]:
        tags: dict[str, None] = {}  # ordered and without repeats
        for key in ("categories", "category", "tags"):
            for tag in self._words(key):
                tags[tag] = None
        return tuple(tags)

    def _words(self, key: str) -> list[str]:
        """A list field, or text: split at commas, else (Jekyll) at spaces."""
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            if "," in value:
                items: list[Any] = value.split(",")
            elif self.jekyll or key != "tags":
                items = value.split()  # Jekyll's rule for categories and tags
            else:
                items = [value]
        elif isinstance(value, list):
            items = value
        else:
            self._error(key, f"{key} must be a list or comma-separated text")
            return []
        words: list[str] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                self._error(key, f"tag {item!r} must be text")
                continue
            if word := str(item).strip():
                words.append(word)
        return words
