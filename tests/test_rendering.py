"""Rendering once per run: inlined HTML, a real text part, series navigation and slots."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.errors import ConfigError, InvalidInputError
from newsletter.rendering.library import BUILTIN_DIR, template_library
from newsletter.rendering.mime import ListHeaders, MessageTemplate, Recipient
from newsletter.rendering.model import ArticleView, EmailContent, Link, Sender, Snapshot
from newsletter.rendering.preview import SAMPLE_VALUES, fill_html
from newsletter.rendering.render import render_email
from newsletter.rendering.slots import (
    SLOT_PATTERN,
    SlotTemplate,
    find_unfilled,
    is_known_key,
    sentinel,
    slot_values,
)
from newsletter.rendering.text import html_to_text

BASE = "https://news.example.org/articles"
SERIES_TITLES = ("Why treatment helps", "Choosing together", "Living with it")
HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>|<!")

RECIPIENT = {
    "name": "Zoë & <Co>",
    "email": "zoe@example.org",
    "unsubscribe_url": "https://news.example.org/unsubscribe/abc.def?x=1&y=2",
    "preferences_url": "https://news.example.org/preferences/ghi.jkl",
    "tracking_note": "Clicks on its links are counted anonymously.",
}


def series(count: int = 3) -> tuple[ArticleView, ...]:
    """A published series whose parts link to their neighbours."""
    urls = [f"{BASE}/part-{i}" for i in range(1, count + 1)]
    links = [Link(title, url) for title, url in zip(SERIES_TITLES, urls, strict=False)]
    return tuple(
        ArticleView(
            title=SERIES_TITLES[i],
            url=urls[i],
            summary=f"Summary of {SERIES_TITLES[i].lower()}.",
            body_html=f"<p>Body of {SERIES_TITLES[i].lower()}.</p>",
            series_title="Treatment basics",
            part=i + 1,
            parts=count,
            previous=links[i - 1] if i > 0 else None,
            next=links[i + 1] if i + 1 < count else None,
        )
        for i in range(count)
    )


STANDALONE = ArticleView(
    title="Flu season",
    url=f"{BASE}/flu-season",
    summary="When to get your flu shot.",
    body_html="<p>Get it in autumn.</p>",
    author="Dr Ada Lee",
    published="7 September 2026",
)


SENDER = Sender("Riverside Clinic", "12 River Road, Springfield, IL 62701, USA")


def content(*articles: ArticleView, subject: str = "News from the clinic") -> EmailContent:
    return EmailContent(
        subject=subject,
        preheader="This month at the clinic",
        articles=articles,
        list_name="Clinic news",
        sender_name="Riverside Clinic",
        web_url="https://news.example.org/archive/emails/abc",
        sender=SENDER,
    )


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def with_class(html: str, tag: str, css_class: str) -> list[dict[str, str]]:
    return [
        attrs
        for t, attrs in elements(html).found
        if t == tag and css_class in attrs.get("class", "").split()
    ]


def fill_by_replace(text: str, values: dict[str, str], marker: str = "") -> str:
    for key, value in values.items():
        text = text.replace(sentinel(key, marker), value)
    return text


# --- CSS inlining --------------------------------------------------------------------


def test_stylesheet_rules_are_inlined_onto_elements() -> None:
    css = (BUILTIN_DIR / "email" / "style.css").read_text()
    assert ".button {" in css and "h1 {" in css  # the rules checked below are real

    html = render_email("article", content(STANDALONE)).html
    found = elements(html).found

    body = next(attrs for tag, attrs in found if tag == "body")
    h1 = next(attrs for tag, attrs in found if tag == "h1")
    footer = with_class(html, "td", "footer")[0]
    assert "font-family:Georgia" in body["style"]
    assert "font-size:26px" in h1["style"]
    assert "text-align:center" in footer["style"]


def test_every_digest_card_carries_its_inline_style() -> None:
    html = render_email("digest", content(*series(), STANDALONE)).html

    cards = with_class(html, "td", "card-cell")
    buttons = with_class(html, "td", "button-cell")
    assert len(cards) == len(buttons) == 4
    assert all("padding:20px 0" in card["style"] for card in cards)
    assert all("background-color:#1d6a5e" in button["style"] for button in buttons)


def test_media_query_survives_in_a_style_block() -> None:
    html = render_email("digest", content(STANDALONE)).html

    styles = elements(html).styles
    assert len(styles) == 1
    block = styles[0]
    assert "@media only screen and (max-width: 620px)" in block
    assert "!important" in block
    # Ordinary rules moved onto the elements; only the media query is left.
    assert "Georgia" not in block
    assert "padding: 6px 12px" not in block  # .series-nav-cell, inlined


# --- the text part ---------------------------------------------------------------------


@pytest.mark.parametrize("template", ["digest", "article"])
def test_text_part_is_plain_text_without_tags(template: str) -> None:
    article = replace(
        STANDALONE,
        body_html='<h2>When</h2><p>In <b>autumn</b>, <a href="https://x.example/flu">see</a>.</p>'
        "<ul><li>Ask us</li></ul>",
    )

    text = render_email(template, content(article, *series())).text

    assert not HTML_TAG.search(text), HTML_TAG.search(text)
    assert "&amp;" not in text and "&middot;" not in text


def test_digest_text_lists_titles_summaries_and_urls() -> None:
    articles = (*series(), STANDALONE)

    text = render_email("digest", content(*articles)).text

    for article in articles:
        assert article.title in text
        assert article.summary in text
        assert f"Read the article: {article.url}" in text


def test_digest_html_lists_titles_summaries_and_urls() -> None:
    articles = (*series(), STANDALONE)

    html = render_email("digest", content(*articles)).html

    hrefs = [attrs.get("href") for tag, attrs in elements(html).found if tag == "a"]
    for article in articles:
        assert article.title in html
        assert article.summary in html
        assert article.url in hrefs


def test_article_template_includes_the_full_body() -> None:
    body = (
        "<h2>Before you start</h2>"
        "<p>Most side effects are mild.</p>"
        "<ul><li>Drink water</li><li>Rest</li></ul>"
        '<p>Read <a href="https://x.example/guide">the guide</a>.</p>'
        "<blockquote>Ask us anything.</blockquote>"
    )
    article = replace(STANDALONE, body_html=body)

    snapshot = render_email("article", content(article))

    assert "<h2" in snapshot.html and "Before you start</h2>" in snapshot.html
    assert "<li" in snapshot.html and "Drink water</li>" in snapshot.html
    assert 'href="https://x.example/guide"' in snapshot.html
    for words in ("Before you start", "Most side effects are mild.", "- Drink water", "- Rest"):
        assert words in snapshot.text
    assert "the guide (https://x.example/guide)" in snapshot.text
    assert "Ask us anything." in snapshot.text
    assert f"Read this article on the web: {article.url}" in snapshot.text


def test_digest_shows_summaries_not_bodies() -> None:
    snapshot = render_email("digest", content(STANDALONE))

    assert "Get it in autumn." not in snapshot.html
    assert "Get it in autumn." not in snapshot.text


def test_author_and_date_are_shown() -> None:
    snapshot = render_email("article", content(STANDALONE))

    assert "Dr Ada Lee · 7 September 2026" in snapshot.html
    assert "Dr Ada Lee · 7 September 2026" in snapshot.text


# --- series navigation -----------------------------------------------------------------


def nav_links(html: str, css_class: str) -> list[str]:
    """The links in the navigation cells of this class (<td class=…><a href=…>)."""
    found = elements(html).found
    return [
        found[i + 1][1]["href"]
        for i, (tag, attrs) in enumerate(found)
        if tag == "td" and css_class in attrs.get("class", "").split() and found[i + 1][0] == "a"
    ]


@pytest.mark.parametrize("template", ["digest", "article"])
def test_series_article_shows_part_k_of_n(template: str) -> None:
    middle = series()[1]

    snapshot = render_email(template, content(middle))

    assert "Treatment basics · Part 2 of 3" in snapshot.html
    assert "Treatment basics · Part 2 of 3" in snapshot.text


@pytest.mark.parametrize("template", ["digest", "article"])
def test_series_article_links_previous_and_next(template: str) -> None:
    first, middle, last = series()

    snapshot = render_email(template, content(middle))

    assert f"Previous: {first.title}" in snapshot.html
    assert f"Next: {last.title}" in snapshot.html
    assert nav_links(snapshot.html, "nav-previous") == [first.url]
    assert nav_links(snapshot.html, "nav-next") == [last.url]
    assert f"Previous: {first.title}\n  {first.url}\n" in snapshot.text
    assert f"Next: {last.title}\n  {last.url}\n" in snapshot.text


@pytest.mark.parametrize("template", ["digest", "article"])
def test_first_series_article_has_no_previous(template: str) -> None:
    first, second, _ = series()

    snapshot = render_email(template, content(first))

    assert "Previous:" not in snapshot.html and "Previous:" not in snapshot.text
    assert nav_links(snapshot.html, "nav-previous") == []
    assert nav_links(snapshot.html, "nav-next") == [second.url]
    assert f"Next: {second.title}" in snapshot.text


@pytest.mark.parametrize("template", ["digest", "article"])
def test_last_series_article_has_no_next(template: str) -> None:
    _, second, last = series()

    snapshot = render_email(template, content(last))

    assert "Next:" not in snapshot.html and "Next:" not in snapshot.text
    assert nav_links(snapshot.html, "nav-next") == []
    assert nav_links(snapshot.html, "nav-previous") == [second.url]
    assert f"Previous: {second.title}" in snapshot.text
    assert "Part 3 of 3" in snapshot.html and "Part 3 of 3" in snapshot.text


@pytest.mark.parametrize("template", ["digest", "article"])
def test_non_series_article_has_no_series_navigation(template: str) -> None:
    snapshot = render_email(template, content(STANDALONE))

    for absent in ("Part ", "Previous:", "Next:", 'class="series-nav', 'class="series-label'):
        assert absent not in snapshot.html
        assert absent not in snapshot.text


def test_digest_of_a_whole_series_links_each_part_to_its_neighbours() -> None:
    snapshot = render_email("digest", content(*series(), STANDALONE))

    assert nav_links(snapshot.html, "nav-previous") == [f"{BASE}/part-1", f"{BASE}/part-2"]
    assert nav_links(snapshot.html, "nav-next") == [f"{BASE}/part-2", f"{BASE}/part-3"]
    assert snapshot.text.count("Previous:") == 2
    assert snapshot.text.count("Next:") == 2
    for k in (1, 2, 3):
        assert f"Part {k} of 3" in snapshot.html and f"Part {k} of 3" in snapshot.text


# --- escaping --------------------------------------------------------------------------


def test_html_in_titles_and_summaries_is_escaped() -> None:
    first, middle, last = series()
    article = replace(
        middle,
        title='<script>alert("x")</script> & Co',
        summary="<b>bold</b> claims",
        previous=Link("<i>prev</i>", first.url),
        next=Link("<img src=x>", last.url),
    )

    html = render_email("digest", content(article, subject="<b>News</b>")).html

    for raw in ("<script>", "<b>bold", "<i>prev", "<img src=x>", "<b>News"):
        assert raw not in html
    assert "&lt;script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; claims" in html
    assert "&lt;i&gt;prev&lt;/i&gt;" in html
    assert "<title>&lt;b&gt;News&lt;/b&gt;</title>" in html


def test_subject_is_one_line_with_whitespace_collapsed() -> None:
    snapshot = render_email(
        "digest", content(STANDALONE, subject="  News\n from   {{ list_name }} ")
    )

    assert snapshot.subject == "News from Clinic news"


@pytest.mark.parametrize("subject", ["{{ unclosed", "{{ no_such_variable }}"])
def test_broken_subject_template_is_invalid_input(subject: str) -> None:
    with pytest.raises(InvalidInputError, match="subject"):
        render_email("digest", content(STANDALONE, subject=subject))


def test_unknown_email_template_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="unknown email template"):
        render_email("newsletter", content(STANDALONE))


def test_snapshot_survives_json() -> None:
    snapshot = render_email("digest", content(*series(), subject="Hi {{ slot('name') }}"))

    assert Snapshot.from_json(snapshot.to_json()) == snapshot


# --- slots ---------------------------------------------------------------------------


def test_render_leaves_a_slot_for_each_recipient_value() -> None:
    snapshot = render_email("digest", content(STANDALONE, subject="Hi {{ slot('name') }}"))

    assert find_unfilled(snapshot.subject, snapshot.marker) == ["name"]
    assert set(find_unfilled(snapshot.html, snapshot.marker)) == set(RECIPIENT)
    assert set(find_unfilled(snapshot.text, snapshot.marker)) == set(RECIPIENT)
    assert snapshot.fallbacks == {
        "name": "there",
        "email": "",
        "preferences_url": "",
        "unsubscribe_url": "",
        "tracking_note": "",
    }


@pytest.mark.parametrize("template", ["digest", "article"])
def test_fill_replaces_every_slot(template: str) -> None:
    snapshot = render_email(template, content(*series(), subject="Hi {{ slot('name') }}"))

    for rendered in (snapshot.subject, snapshot.html, snapshot.text):
        filled = SlotTemplate.compile(rendered, snapshot.marker).fill(RECIPIENT)
        assert find_unfilled(filled, snapshot.marker) == []
        assert "__slot_" not in filled
        assert RECIPIENT["name"] in filled


def test_fill_with_a_missing_key_raises_key_error() -> None:
    rendered = render_email("digest", content(STANDALONE))
    template = SlotTemplate.compile(rendered.text, rendered.marker)
    values = {k: v for k, v in RECIPIENT.items() if k != "unsubscribe_url"}

    with pytest.raises(KeyError, match="unsubscribe_url"):
        template.fill(values)


@pytest.mark.parametrize(
    "subject",
    [
        "{{ slot('nickname') }}",
        "{{ slot('Name') }}",
        "{{ slot('attr.') }}",
        "{{ slot('attr.has space') }}",
        "{{ slot('attr.a.b') }}",
        "{{ slot('attr.first__name') }}",
        "{{ slot('attr.city_') }}",
        "{{ slot('attr._city') }}",
    ],
)
def test_unknown_slot_key_is_refused_at_render_time(subject: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown slot"):
        render_email("digest", content(STANDALONE, subject=subject))


def test_attribute_slot_keeps_its_fallback() -> None:
    snapshot = render_email(
        "digest", content(STANDALONE, subject="News for {{ slot('attr.city', 'your area') }}")
    )

    assert snapshot.subject == f"News for {sentinel('attr.city', snapshot.marker)}"
    assert snapshot.fallbacks["attr.city"] == "your area"
    assert SlotTemplate.compile(snapshot.subject, snapshot.marker).keys == ("attr.city",)


def test_conflicting_fallbacks_for_one_slot_in_one_part_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="two fallbacks"):
        render_email(
            "digest",
            content(STANDALONE, subject="{{ slot('name', 'a') }} and {{ slot('name', 'b') }}"),
        )


def test_the_subject_chooses_its_own_fallback_apart_from_the_body() -> None:
    # base.html greets with slot("name", "there"); the subject says 'Reader'.
    snapshot = render_email(
        "digest", content(STANDALONE, subject="{{ slot('name', 'Reader') }}, your news")
    )

    assert snapshot.subject_slot_fallbacks["name"] == "Reader"
    assert snapshot.fallbacks["name"] == "there"
    template = MessageTemplate(
        snapshot, ListHeaders("News <news@clinic.example>", "News", "n.x.example")
    )
    message = email.message_from_bytes(
        template.build(
            Recipient("a@example.org", "", {"unsubscribe_url": "https://x.example/u"}, "<m@x>")
        ),
        policy=email.policy.default,
    )
    assert message["Subject"] == "Reader, your news"
    html = message.get_body(("html",))
    assert html is not None and "Hello there," in html.get_content()


def test_a_slot_without_fallback_in_the_subject_shows_nothing_when_empty() -> None:
    snapshot = render_email("digest", content(STANDALONE, subject="Hi {{ slot('name') }}"))

    assert snapshot.subject_slot_fallbacks["name"] == ""
    assert snapshot.fallbacks["name"] == "there"


@pytest.mark.parametrize("template", ["digest", "article"])
def test_fill_equals_a_direct_substitution_of_the_values(template: str) -> None:
    snapshot = render_email(
        template,
        content(*series(), subject="{{ slot('name') }}: news for {{ slot('attr.city', 'you') }}"),
    )
    values = {**RECIPIENT, "attr.city": "Köln = 50°N"}

    for rendered in (snapshot.subject, snapshot.html, snapshot.text):
        assert SlotTemplate.compile(rendered, snapshot.marker).fill(values) == fill_by_replace(
            rendered, values, snapshot.marker
        )


def test_map_parts_transforms_literal_text_and_keeps_the_slots() -> None:
    template = SlotTemplate.compile(f"hello {sentinel('name')}, bye {sentinel('email')}!")

    shouted = template.map_parts(str.upper)

    assert shouted.keys == ("name", "email")
    assert shouted.fill({"name": "zoë", "email": "z@x"}) == "HELLO zoë, BYE z@x!"


def test_text_without_slots_fills_to_itself() -> None:
    template = SlotTemplate.compile("no slots here __slot_ nor __slot_Name__")

    assert template.keys == ()
    assert template.fill({}) == "no slots here __slot_ nor __slot_Name__"


def test_slot_values_are_not_read_as_slots() -> None:
    template = SlotTemplate.compile(f"{sentinel('name')} <{sentinel('email')}>")

    assert template.fill({"name": sentinel("email"), "email": "z@x"}) == "__slot_email__ <z@x>"


def test_adjacent_slots_are_two_slots() -> None:
    template = SlotTemplate.compile(sentinel("name") + sentinel("email"))

    assert template.keys == ("name", "email")
    assert template.parts == ("", "", "")


def test_slot_followed_by_an_underscore_keeps_its_key() -> None:
    template = SlotTemplate.compile(sentinel("email") + "_2026")

    assert template.keys == ("email",)
    assert template.parts == ("", "_2026")


@pytest.mark.parametrize("key", ["name", "unsubscribe_url", "attr.city", "attr.first_name"])
@pytest.mark.parametrize("before", ["", "_", "__", "x", sentinel("email")])
@pytest.mark.parametrize("after", ["", "_", "__", "_2026", "x", sentinel("name")])
def test_a_sentinel_reads_back_as_its_key_whatever_surrounds_it(
    key: str, before: str, after: str
) -> None:
    template = SlotTemplate.compile(before + sentinel(key) + after)

    assert key in template.keys
    assert template.fill(dict.fromkeys(template.keys, "<v>")).count("<v>") == len(template.keys)
    assert "__slot_" not in template.fill(dict.fromkeys(template.keys, "<v>"))


@pytest.mark.parametrize(
    "key",
    [
        "name",
        "email",
        "unsubscribe_url",
        "preferences_url",
        "attr.city",
        "attr.Zip-Code",
        "attr.first_name",
        "attr.a_b_c",
        "attr.-x",
        "attr.2026",
    ],
)
def test_every_known_key_is_matched_whole_by_the_slot_pattern(key: str) -> None:
    match = SLOT_PATTERN.fullmatch(sentinel(key))

    assert is_known_key(key)
    assert match is not None
    assert match.group(1) == key


@pytest.mark.parametrize(
    "key",
    ["attr.", "attr.a__b", "attr._a", "attr.a_", "attr.a.b", "attr.a b", "attr", "nickname"],
)
def test_keys_the_slot_pattern_cannot_read_back_are_unknown(key: str) -> None:
    assert not is_known_key(key)
    with pytest.raises(InvalidInputError, match="unknown slot"):
        sentinel(key)


def test_subject_with_adjacent_slots_can_be_filled() -> None:
    snapshot = render_email(
        "digest", content(STANDALONE, subject="{{ slot('name') }}{{ slot('email') }}")
    )

    filled = SlotTemplate.compile(snapshot.subject, snapshot.marker).fill(RECIPIENT)

    assert filled == RECIPIENT["name"] + RECIPIENT["email"]


# --- html_to_text ----------------------------------------------------------------------


def test_html_to_text_keeps_headings_lists_and_link_targets() -> None:
    text = html_to_text(
        "<h2>Side effects</h2><p>Most are <b>mild</b> &amp; short.</p>"
        "<ul><li>one</li><li>two</li></ul>"
        '<p><a href="https://x.example/a">More</a> or '
        '<a href="https://x.example/b">https://x.example/b</a></p>'
    )

    assert text == (
        "Side effects\n------------\n\n"
        "Most are mild & short.\n\n"
        "- one\n\n- two\n\n"
        "More (https://x.example/a) or https://x.example/b"
    )


def test_html_to_text_wraps_paragraphs_at_72_columns() -> None:
    text = html_to_text("<p>" + "word " * 60 + "</p>")

    assert all(len(line) <= 72 for line in text.splitlines())
    assert text.split() == ["word"] * 60


def test_html_to_text_never_splits_a_url() -> None:
    url = "https://news.example.org/articles/understanding-treatment-options-part-one"

    text = html_to_text(f'<p>Read the earlier part, <a href="{url}">what the options are</a>.</p>')

    assert f"({url})" in text
    assert text.splitlines() == ["Read the earlier part, what the options are", f"({url})."]


def test_html_to_text_never_splits_a_hyphenated_word() -> None:
    # textwrap's default would end the first line with "evidence-".
    text = html_to_text("<p>" + "word " * 12 + "evidence-based well-being</p>")

    assert all(len(line) <= 72 for line in text.splitlines())
    assert "evidence-based" in text.split()
    assert "well-being" in text.split()


def test_html_to_text_keeps_line_breaks() -> None:
    assert html_to_text("<p>12 River Road<br>Riverside</p>") == "12 River Road\nRiverside"


def test_html_to_text_keeps_each_line_within_72_columns() -> None:
    text = html_to_text("<p>" + "word " * 20 + "<br/>\n  second   line<br></p><p>next</p>")

    assert all(len(line) <= 72 for line in text.splitlines())
    assert text.split("\n")[-3:] == ["second line", "", "next"]
    assert text.split() == ["word"] * 20 + ["second", "line", "next"]


def test_html_to_text_line_breaks_in_a_list_item_are_indented() -> None:
    text = html_to_text("<ul><li>Riverside Clinic<br>12 River Road</li></ul>")

    assert text == "- Riverside Clinic\n  12 River Road"


def test_html_to_text_keeps_a_blank_line_from_two_breaks() -> None:
    assert html_to_text("<p><br>a<br><br>b<br></p>") == "a\n\nb"


# --- previews --------------------------------------------------------------------------


def test_preview_fills_sample_values_by_default() -> None:
    snapshot = render_email("digest", content(STANDALONE))

    html = fill_html(snapshot)

    assert find_unfilled(html) == []
    assert f"Hello {SAMPLE_VALUES['name']}," in html
    assert SAMPLE_VALUES["email"] in html


def test_preview_escapes_values() -> None:
    snapshot = render_email("digest", content(STANDALONE))

    html = fill_html(snapshot, dict(RECIPIENT))

    assert "Hello Zoë &amp; &lt;Co&gt;," in html
    assert 'href="https://news.example.org/unsubscribe/abc.def?x=1&amp;y=2"' in html
    assert find_unfilled(html) == []


def test_preview_uses_fallbacks_then_empty_for_missing_values() -> None:
    snapshot = render_email(
        "digest", content(STANDALONE, subject="{{ slot('attr.city', 'your area') }}")
    )

    html = fill_html(snapshot, {"email": "z@example.org"})

    assert "Hello there," in html
    assert "<title>your area</title>" in html
    assert 'href=""' in html  # unsubscribe_url: no value, no fallback
    assert find_unfilled(html) == []


def test_preview_treats_an_empty_value_like_the_email_does() -> None:
    snapshot = render_email("digest", content(STANDALONE))

    html = fill_html(snapshot, {"name": "", "email": "", "unsubscribe_url": "#"})

    assert "Hello there," in html
    assert "Hello ," not in html
    assert find_unfilled(html) == []


def test_slot_values_take_the_fallback_for_empty_or_missing_values() -> None:
    fallbacks = {"name": "there", "attr.city": "your area", "email": ""}

    values = slot_values(fallbacks, {"name": "", "email": "z@example.org", "attr.x": "1"})

    assert values == {
        "name": "there",
        "attr.city": "your area",
        "email": "z@example.org",
        "attr.x": "1",
    }
    assert fallbacks == {"name": "there", "attr.city": "your area", "email": ""}


# --- the publisher's own template files (NEWSLETTER_TEMPLATES_DIR) ------------------------


def test_a_file_in_the_templates_folder_replaces_the_built_in_one_at_the_next_render(
    tmp_path: Path,
) -> None:
    library = template_library(str(tmp_path))
    assert (
        "Our own masthead" not in render_email("digest", content(STANDALONE), library=library).html
    )

    builtin = (BUILTIN_DIR / "email" / "digest.html").read_text()
    (tmp_path / "email").mkdir()
    override = tmp_path / "email" / "digest.html"
    override.write_text(
        builtin.replace("{% block intro %}", "{% block intro %}<p>Our own masthead</p>", 1)
    )
    assert "{% block intro %}" in builtin  # the marker went in

    html = render_email("digest", content(STANDALONE), library=library).html
    assert "Our own masthead" in html
    assert "Our own masthead" not in render_email("digest", content(STANDALONE)).html

    override.unlink()
    assert (
        "Our own masthead" not in render_email("digest", content(STANDALONE), library=library).html
    )


def test_a_stylesheet_in_the_templates_folder_is_inlined_instead_of_ours(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    css = (BUILTIN_DIR / "email" / "style.css").read_text()
    (tmp_path / "email" / "style.css").write_text(css + "\nh1, h2 { color: #123456; }\n")

    html = render_email("digest", content(STANDALONE), library=template_library(str(tmp_path))).html

    assert "#123456" in html
    assert "#123456" not in render_email("digest", content(STANDALONE)).html


def test_templates_dir_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"NEWSLETTER_TEMPLATES_DIR: .* is not a folder"):
        load_settings(templates_dir=str(tmp_path / "missing"))
