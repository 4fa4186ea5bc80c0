"""Moving a blog in: real Jekyll and Hugo posts, WordPress and Ghost exports.

The posts and exports under tests/data/blogs and tests/data/exports are copied byte for
byte from public repositories (see the SOURCES.md next to them); each test imports
them into a real database and, where it matters, renders them through the real email
templates.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.content.importer import import_articles
from newsletter.content.models import Article
from newsletter.content.series import get_article, get_series, published_in_order
from newsletter.content.sources import import_sources, source_kind
from newsletter.content.views import article_view
from newsletter.errors import Problem
from newsletter.rendering.model import EmailContent, Snapshot
from newsletter.rendering.render import render_email
from newsletter.rendering.slots import find_unfilled

DATA = Path(__file__).resolve().parent / "data"
BLOGS = DATA / "blogs"
EXPORTS = DATA / "exports"
WXR = EXPORTS / "wordpress" / "sitetitle.wordpress.2025-01-19.000.xml"
BROKEN_WXR = EXPORTS / "wordpress" / "ghost-migrate-sample.xml"
GHOST = EXPORTS / "ghost" / "export-003.json"
BASE_URL = "https://news.example.org"

# Template syntax a blog engine would have run: none of it may reach a reader.
TEMPLATE_SYNTAX = re.compile(r"{%|%}|{{|}}|\[/?caption|\[gallery|\[embed")
CODE = re.compile(r"<pre\b.*?</pre>|<code\b.*?</code>", re.DOTALL)


def email_for(session: Session, slug: str) -> Snapshot:
    """The one-article email for this article, rendered as a run renders it."""
    article = get_article(session, slug)
    content = EmailContent(
        subject="New on the blog",  # staff write subjects; an article's title is data
        preheader="",
        articles=(article_view(session, article, BASE_URL),),
        list_name="Readers",
        sender_name="The blog",
        web_url=f"{BASE_URL}/archive",
    )
    return render_email("article", content)


def assert_no_template_syntax(snapshot: Snapshot) -> None:
    """Outside code blocks (where an author shows syntax on purpose), nothing of it."""
    prose = CODE.sub("", snapshot.html)
    assert not TEMPLATE_SYNTAX.search(prose), TEMPLATE_SYNTAX.findall(prose)


def at(year: int, month: int, day: int, *time: int) -> datetime:
    return datetime(year, month, day, *time, tzinfo=UTC)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- Jekyll -----------------------------------------------------------------------------


def test_jekyll_release_posts_keep_their_dates_authors_and_categories(session: Session) -> None:
    report = import_articles(session, [BLOGS / "jekyll-docs"])

    assert (report.created, report.drafts, report.problems) == (3, 0, [])
    post = get_article(session, "jekyll-1-5-1-released")
    assert post.title == "Jekyll 1.5.1 Released"
    assert post.published_at == at(2014, 3, 28, 2, 43, 48)  # 22:43:48 -0400
    assert (post.author, post.tags) == ("parkr", ["release"])
    third = get_article(session, "jekyll-3-3-is-here")
    assert third.title.startswith("Jekyll 3.3 is here with better theme support")
    assert third.published_at == at(2016, 10, 6, 18, 10, 38)
    # A custom field is a warning about an imported post, never a reason to skip it.
    assert {(Path(w.where).name, w.reason) for w in report.warnings} == {
        ("2014-03-27-jekyll-1-5-1-released.markdown:5", "unknown field 'version' ignored"),
        ("2016-10-06-jekyll-3-3-is-here.md:5", "unknown field 'version' ignored"),
        ("2017-03-09-jekyll-3-4-2-released.markdown:5", "unknown field 'version' ignored"),
        (
            "2017-03-09-jekyll-3-4-2-released.markdown",
            "1 link or image points into the old site (no address), which will not work "
            "in an email; import with the old site's address to resolve them",
        ),
    }


def test_site_url_makes_the_old_sites_links_absolute(session: Session) -> None:
    report = import_sources(
        session, [str(BLOGS / "jekyll-docs")], site_url="https://jekyllrb.com/news/"
    )

    assert not [w for w in report.warnings if "old site" in w.reason]
    body = get_article(session, "jekyll-3-4-2-released").body_html
    assert 'href="https://jekyllrb.com/docs/configuration/front-matter-defaults/"' in body


def test_liquid_highlight_becomes_a_code_block_and_raw_is_shown_as_written(
    session: Session,
) -> None:
    import_articles(session, [BLOGS / "jekyll-docs"])

    sanitized = get_article(session, "jekyll-1-5-1-released").body_html
    assert '<pre><code class="language-ruby">&gt; sanitized_path(' in sanitized
    filters = get_article(session, "jekyll-3-3-is-here").body_html
    # {% raw %} kept the author's example; the {{ … | relative_url }} link lost its tag.
    assert '{{ "/docs/assets/" | relative_url }}' in filters
    assert "documentation on the subject</a>" not in filters
    assert "documentation on the subject" in filters
    for slug in ("jekyll-1-5-1-released", "jekyll-3-3-is-here", "jekyll-3-4-2-released"):
        assert_no_template_syntax(email_for(session, slug))


def test_minima_posts_take_title_date_and_slug_from_the_file_name(session: Session) -> None:
    report = import_articles(session, [BLOGS / "minima"])

    assert (report.created, report.drafts, report.problems) == (3, 0, [])
    post = get_article(session, "codeblocks-ahoy")
    assert (post.title, post.published_at) == ("Codeblocks Ahoy", at(2016, 5, 19))
    assert get_article(session, "welcome-to-jekyll").title == "Welcome To Jekyll"
    example = get_article(session, "my-example-post")
    assert example.author == "John Doe"
    assert "include" not in example.body_html and "Might you have" not in example.body_html
    for slug in ("codeblocks-ahoy", "welcome-to-jekyll", "my-example-post"):
        assert_no_template_syntax(email_for(session, slug))


def test_jekyll_exports_with_published_false_dates_and_word_lists(session: Session) -> None:
    report = import_articles(session, [BLOGS / "ghost-migrate-jekyll"])

    assert report.problems == []
    assert report.created == 12
    assert get_article(session, "published-false").published_at is None
    assert report.drafts == 1
    assert get_article(session, "alt-date-format").published_at == at(2021, 9, 1)
    assert get_article(session, "unquoted-date").published_at == at(2022, 6, 6)
    assert get_article(session, "my-first-post").published_at == at(2021, 11, 26)
    # Jekyll splits text categories and tags at spaces; lists stay lists.
    assert get_article(session, "front-matter-tags-cats").tags == [
        "Posts",
        "Articles",
        "News",
        "dolor",
        "Simet-Amet",
    ]
    assert get_article(session, "tag-list").tags == ["cat", "photos", "some-word"]


def test_a_post_in_drafts_is_a_draft_and_a_site_folder_means_its_posts(
    session: Session, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    shutil.copytree(BLOGS / "minima", site / "_posts")
    write(site, "_drafts/next-steps.md", "---\ntitle: Next steps\ndate: 2030-01-01\n---\nSoon.\n")
    write(site, "README.md", "# My site\n")  # not a post: never read
    write(site, "_config.yml", "title: My site\n")

    report = import_articles(session, [site])

    assert (report.created, report.drafts, report.problems) == (4, 1, [])
    assert get_article(session, "next-steps").published_at is None


# --- Hugo -------------------------------------------------------------------------------


def test_hugo_toml_posts_with_author_lists_and_series(session: Session) -> None:
    report = import_articles(session, [BLOGS / "hugo-coder"])

    assert (report.created, report.drafts, report.problems) == (5, 0, [])
    rich = get_article(session, "rich-content")
    assert (rich.title, rich.published_at, rich.author) == (
        "Rich Content",
        at(2023, 7, 12),
        "Lone Coder",
    )
    assert rich.summary == "A brief description of Hugo Shortcodes"
    assert rich.tags[:2] == ["theme demo", "syntax"]
    series = get_series(session, "theme-demo")
    assert series.title == "Theme Demo"
    in_order = [a.slug for a in published_in_order(session, series.id)]
    assert sorted(in_order) == ["html-and-css-only-tabs", "more-rich-content", "rich-content"]
    assert get_article(session, "hugo-coder-wiki").title == "External Page: Hugo Coder Wiki"


def test_hugo_shortcodes_become_links_and_text(session: Session) -> None:
    import_articles(session, [BLOGS / "hugo-coder"])

    rich = get_article(session, "rich-content").body_html
    assert 'href="https://www.youtube.com/watch?v=ZJthWmvUzzc"' in rich
    assert 'href="https://x.com/SanDiegoZoo/status/1453110110599868418"' in rich
    notices = get_article(session, "more-rich-content").body_html
    assert "<p>One note here.</p>" in notices
    tabs = get_article(session, "html-and-css-only-tabs").body_html
    # The escaped examples are shown as the author wrote them, inside code blocks.
    assert '<code class="language-markdown">{{&lt; tabgroup &gt;}}' in tabs
    for slug in ("rich-content", "more-rich-content", "html-and-css-only-tabs"):
        assert_no_template_syntax(email_for(session, slug))


def test_hugo_draft_publish_date_expiry_weight_and_bundles(
    session: Session, tmp_path: Path
) -> None:
    posts = tmp_path / "posts"
    write(posts, "a.md", '+++\ntitle = "Draft"\ndate = 2024-01-01\ndraft = true\n+++\nBody.\n')
    write(
        posts,
        "b.md",
        '+++\ntitle = "Later"\ndate = 2024-01-01T10:00:00+01:00\n'
        'publishDate = 2024-02-01T10:00:00+01:00\nseries = ["Guide"]\nweight = 2\n+++\n',
    )
    write(posts, "c.md", "---\ntitle: Gone\ndate: 2020-01-01\nexpiryDate: 2021-01-01\n---\n")
    write(posts, "my-bundle/index.md", "---\ntitle: Bundle\ndate: 2024-03-01\n---\n")

    report = import_articles(session, [posts])

    assert report.problems == []
    assert get_article(session, "a").published_at is None
    later = get_article(session, "b")
    assert later.published_at == at(2024, 2, 1, 9)
    assert later.series is not None and later.series.title == "Guide"
    assert later.position == 2
    assert get_article(session, "c").published_at is None
    assert get_article(session, "my-bundle").title == "Bundle"
    assert report.drafts == 2
    assert [w.reason for w in report.warnings] == ["expired on 2021-01-01: imported as a draft"]


def test_toml_error_names_the_file_line(session: Session, tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.md", '+++\ntitle = "T"\ndate = \n+++\nBody\n')

    report = import_articles(session, [bad])

    assert report.created == 0
    [problem] = report.problems
    assert problem.where == f"{bad}:3"
    assert problem.reason.startswith("TOML error: ")


def test_a_hugo_section_page_is_not_an_article(session: Session, tmp_path: Path) -> None:
    write(tmp_path, "posts/_index.md", "---\ntitle: Posts\n---\n")
    write(tmp_path, "posts/one.md", "---\ntitle: One\ndate: 2024-01-01\n---\n")

    report = import_articles(session, [tmp_path])

    assert report.created == 1
    assert [p.reason for p in report.problems] == [
        "a Hugo section page (_index.md) lists articles; not imported"
    ]


# --- WordPress --------------------------------------------------------------------------


def test_wordpress_export_imports_its_posts_with_gmt_dates(session: Session) -> None:
    report = import_sources(session, [str(WXR)])

    assert report.problems == []
    assert (report.created, report.drafts) == (7, 0)
    post = get_article(session, "the-art-of-connection")
    assert post.title == "The Art of Connection"
    # post_date is 18:26:26 in the site's zone; post_date_gmt is the moment.
    assert post.published_at == at(2025, 1, 19, 2, 26, 26)
    assert post.author == "jekyllbot"
    assert post.summary.startswith("In the ever-evolving world")
    assert post.image.startswith("https://jekyllbot.wordpress.com/wp-content/uploads/")
    assert get_article(session, "blog-post-1").tags == ["code", "Foo", "ruby", "ship", "stars"]
    assert [w.reason for w in report.warnings] == [
        "only posts are articles; not imported: "
        "6 attachment, 1 page, 1 wp_global_styles, 1 wp_navigation"
    ]
    for slug in ("the-art-of-connection", "blog-post-1"):
        assert_no_template_syntax(email_for(session, slug))


def test_wordpress_statuses_shortcodes_and_classic_paragraphs(
    session: Session, tmp_path: Path
) -> None:
    def item(post_id: int, status: str, date_gmt: str, content: str) -> str:
        return (
            f"<item><title>Post {post_id}</title><dc:creator>ann</dc:creator>"
            f"<content:encoded><![CDATA[{content}]]></content:encoded>"
            f"<wp:post_id>{post_id}</wp:post_id><wp:post_date_gmt>{date_gmt}</wp:post_date_gmt>"
            f"<wp:post_name>post-{post_id}</wp:post_name><wp:status>{status}</wp:status>"
            "<wp:post_type>post</wp:post_type></item>"
        )

    caption = '[caption id="a" width="300"]<img src="https://x.example/a.jpg"> A cat[/caption]'
    export = write(
        tmp_path,
        "export.xml",
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:wp="http://wordpress.org/export/1.2/"><channel><title>Site</title>'
        "<wp:author><wp:author_login>ann</wp:author_login>"
        "<wp:author_display_name>Ann Author</wp:author_display_name></wp:author>"
        + item(1, "publish", "2020-05-01 10:00:00", "First line\nsecond line\n\nNext [gallery]")
        + item(2, "draft", "0000-00-00 00:00:00", caption)
        + item(3, "future", "2031-01-01 08:00:00", "Soon")
        + item(4, "private", "2020-05-02 10:00:00", "Mine")
        + item(5, "trash", "2020-05-03 10:00:00", "Gone")
        + "</channel></rss>",
    )

    report = import_sources(session, [str(export)])

    assert (report.created, report.drafts) == (4, 2)
    assert report.problems == [Problem(f"{export}: post 5", "in the WordPress trash; not imported")]
    first = get_article(session, "post-1")
    assert first.author == "Ann Author"
    assert first.body_html == "<p>First line<br>\nsecond line</p>\n<p>Next</p>"
    assert get_article(session, "post-2").published_at is None
    assert (
        get_article(session, "post-2").body_html
        == '<p><img src="https://x.example/a.jpg"> A cat</p>'
    )
    assert get_article(session, "post-3").published_at == at(2031, 1, 1, 8)
    assert get_article(session, "post-4").published_at is None


def test_malformed_wordpress_export_names_its_line_and_imports_nothing(
    session: Session,
) -> None:
    report = import_sources(session, [str(BROKEN_WXR)])

    assert report.imported == 0
    [problem] = report.problems
    assert problem.where == f"{BROKEN_WXR}:109"
    assert problem.reason.startswith("not well-formed XML")


def test_wordpress_export_declaring_entities_is_refused(session: Session, tmp_path: Path) -> None:
    export = write(
        tmp_path,
        "export.xml",
        '<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
        '<rss xmlns:wp="http://wordpress.org/export/1.2/"><channel><item><title>&secret;</title>'
        "<wp:post_type>post</wp:post_type></item></channel></rss>",
    )

    report = import_sources(session, [str(export)])

    assert report.imported == 0
    assert report.problems[0].reason.startswith("refused")
    assert session.scalar(select(func.count(Article.id))) == 0


# --- Ghost ------------------------------------------------------------------------------


def test_ghost_export_imports_its_posts(session: Session) -> None:
    assert source_kind(str(GHOST)) == "ghost"

    report = import_sources(session, [str(GHOST)])

    assert (report.created, report.drafts, report.problems) == (1, 0, [])
    post = get_article(session, "welcome-to-ghost")
    assert post.title == "Welcome to Ghost"
    assert post.published_at == datetime.fromtimestamp(1388318310.783, UTC)
    assert (post.author, post.tags) == ("Joe Bloggs", ["Getting Started"])
    assert post.body_html == "<p>You're live! Nice.</p>"


def test_ghost_drafts_pages_and_lexical_bodies(session: Session, tmp_path: Path) -> None:
    lexical = (
        '{"root":{"children":[{"type":"heading","tag":"h2","children":'
        '[{"type":"text","text":"Hello","format":0}]},{"type":"paragraph","children":'
        '[{"type":"text","text":"bold","format":1},{"type":"link","url":"https://x.example",'
        '"children":[{"type":"text","text":" link","format":0}]}]}]}}'
    )
    export = write(
        tmp_path,
        "ghost.json",
        '{"db":[{"meta":{"version":"5.80.0"},"data":{'
        '"posts":['
        '{"id":"p1","title":"Live","slug":"live","html":null,"lexical":'
        + json.dumps(lexical)
        + ',"status":"published","type":"post","published_at":"2024-05-01T08:00:00.000Z"},'
        '{"id":"p2","title":"Unfinished","slug":"unfinished","html":"<p>x</p>",'
        '"status":"draft","type":"post","published_at":null},'
        '{"id":"p3","title":"About","slug":"about","html":"<p>x</p>",'
        '"status":"published","type":"page","published_at":"2024-01-01T00:00:00.000Z"}],'
        '"users":[{"id":"u1","name":"Ann"}],"posts_authors":[{"post_id":"p1","author_id":"u1"}]'
        "}}]}",
    )

    report = import_sources(session, [str(export)])

    assert (report.created, report.drafts) == (2, 1)
    live = get_article(session, "live")
    assert live.published_at == at(2024, 5, 1, 8)
    assert live.author == "Ann"
    assert live.body_html == (
        '<h2>Hello</h2><p><strong>bold</strong><a href="https://x.example" '
        'rel="noopener noreferrer"> link</a></p>'
    )
    assert get_article(session, "unfinished").published_at is None
    assert [w.reason for w in report.warnings] == ["only posts are articles; not imported: 1 page"]


def test_ghost_url_placeholder_becomes_the_site_url(session: Session, tmp_path: Path) -> None:
    post = {
        "id": "p1",
        "title": "Photos",
        "slug": "photos",
        "html": '<p><img src="__GHOST_URL__/content/images/a.jpg"><a href="/about/">me</a></p>',
        "feature_image": "__GHOST_URL__/content/images/cover.jpg",
        "status": "published",
        "type": "post",
        "published_at": "2024-05-01T08:00:00.000Z",
    }
    export = write(tmp_path, "ghost.json", json.dumps({"db": [{"data": {"posts": [post]}}]}))

    without = import_sources(session, [str(export)], dry_run=True)
    import_sources(session, [str(export)], site_url="https://blog.example.org")

    assert [w.reason.split(" into")[0] for w in without.warnings] == ["2 links or images point"]
    photos = get_article(session, "photos")
    assert photos.image == "https://blog.example.org/content/images/cover.jpg"
    assert photos.body_html == (
        '<p><img src="https://blog.example.org/content/images/a.jpg">'
        '<a href="https://blog.example.org/about/" rel="noopener noreferrer">me</a></p>'
    )


def test_ghost_mobiledoc_bodies_are_rebuilt(session: Session, tmp_path: Path) -> None:
    mobiledoc = {
        "version": "0.3.1",
        "atoms": [],
        "markups": [["a", ["href", "https://ghost.org"]], ["strong"]],
        "cards": [["markdown", {"markdown": "* one\n* two"}], ["hr", {}]],
        "sections": [
            [1, "h2", [[0, [], 0, "Title"]]],
            [1, "p", [[0, [1], 1, "Bold"], [0, [], 0, " and "], [0, [0], 1, "a link"]]],
            [10, 0],
            [10, 1],
        ],
    }
    post = {
        "id": "p1",
        "title": "Old editor",
        "slug": "old-editor",
        "mobiledoc": json.dumps(mobiledoc),
        "status": "published",
        "page": False,
        "published_at": "2019-02-03T04:05:06.000Z",
    }
    export = write(tmp_path, "ghost.json", json.dumps({"db": [{"data": {"posts": [post]}}]}))

    import_sources(session, [str(export)])

    assert get_article(session, "old-editor").body_html == (
        "<h2>Title</h2><p><strong>Bold</strong> and "
        '<a href="https://ghost.org" rel="noopener noreferrer">a link</a></p>'
        "<ul>\n<li>one</li>\n<li>two</li>\n</ul><hr>"
    )


# --- safety and the report --------------------------------------------------------------


def test_nothing_in_an_article_is_run_as_a_template(session: Session, tmp_path: Path) -> None:
    write(
        tmp_path,
        "2024-01-01-sums.md",
        '---\ntitle: "Sums {{ 7*7 }}"\n---\n'
        "Shown: {% raw %}`{{ 7*7 }}`{% endraw %}. Run by Jekyll: {{ 7*7 }}.\n\n"
        "{{ config.items() }} {% for x in range(3) %}loop{% endfor %}\n",
    )
    import_articles(session, [tmp_path])

    snapshot = email_for(session, "sums")

    assert "49" not in snapshot.html and "49" not in snapshot.text
    assert "<code>{{ 7*7 }}</code>" in snapshot.html
    assert "Sums {{ 7*7 }}" in snapshot.html  # a title is text, shown as written
    assert "loop" in snapshot.html and "config" not in snapshot.html


def test_a_slot_marker_in_an_article_is_not_filled_with_the_readers_data(
    session: Session, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "2024-01-02-markers.md",
        "---\ntitle: About __slot_name__\n---\n"
        "Mail `__slot_email__` or <span>__slot_attr.plan__</span>.\n",
    )
    import_articles(session, [tmp_path])

    snapshot = email_for(session, "markers")

    # Only the template's own markers are left for the run to fill.
    assert find_unfilled(snapshot.html, snapshot.marker) == [
        "name",
        "email",
        "unsubscribe_url",
        "preferences_url",
        "tracking_note",
    ]
    assert "attr.plan" not in find_unfilled(snapshot.text, snapshot.marker)
    assert "Mail <code>_\u200b_slot_email__</code> or" in snapshot.html


def test_dry_run_counts_without_writing(session: Session) -> None:
    sources = [str(BLOGS / "ghost-migrate-jekyll"), str(WXR), str(GHOST)]

    report = import_sources(session, sources, dry_run=True)

    assert report.dry_run
    assert (report.created, report.drafts) == (12 + 7 + 1, 1)
    assert session.scalar(select(func.count(Article.id))) == 0
    assert import_sources(session, sources).created == 20


def test_summary_tells_drafts_skipped_and_warnings_apart(session: Session) -> None:
    import_sources(session, [str(BLOGS / "ghost-migrate-jekyll")])

    report = import_sources(session, [str(BLOGS / "ghost-migrate-jekyll"), str(BROKEN_WXR)])

    assert report.summary() == (
        "0 created, 0 updated, 12 unchanged, 1 draft, 1 skipped, 3 warnings"
    )


def test_two_sources_with_one_slug_are_told_apart(session: Session, tmp_path: Path) -> None:
    write(tmp_path, "welcome-to-ghost.md", "---\ntitle: Mine\ndate: 2024-01-01\n---\n")

    report = import_sources(session, [str(GHOST), str(tmp_path)])

    assert report.created == 1
    assert [p.reason for p in report.problems] == [
        f"slug 'welcome-to-ghost' is already used by {GHOST}: post welcome-to-ghost in this "
        "import; skipped"
    ]
    assert get_article(session, "welcome-to-ghost").title == "Welcome to Ghost"


def test_json_that_is_not_a_ghost_export_is_reported(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, "notes.json", '{"posts": []}')

    report = import_sources(session, [str(path)])

    assert report.problems == [Problem(str(path), "not a Ghost export: no db[0].data.posts")]
