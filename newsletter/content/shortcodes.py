"""Template syntax in imported posts: Liquid (Jekyll), Hugo shortcodes, WordPress shortcodes.

A blog engine runs these when it builds the site; an email has no engine behind it, so
each is rewritten here into what a reader would have seen (a code block, a link to the
video, the caption's text) or removed. Nothing is ever evaluated: every rewrite is a
regular expression over the text, and the text that comes out is plain Markdown or HTML
that later passes the article sanitiser. What an author escaped on purpose to show the
syntax itself (`{% raw %}…{% endraw %}`, Hugo's `{{</* … */>}}`) is kept as text.
"""

from __future__ import annotations

import html
import re
import shlex

_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDER_RE = re.compile("\x00(\\d+)\x00")

# {% raw %}…{% endraw %}: the author wants the Liquid inside shown as it is.
_LIQUID_RAW = re.compile(r"{%-?\s*raw\s*-?%}(.*?){%-?\s*endraw\s*-?%}", re.DOTALL)
# Hugo's escape for showing a shortcode: {{</* name */>}} and {{%/* name */%}}.
_HUGO_ESCAPED = re.compile(r"{{([<%])/\*(.*?)\*/([>%])}}", re.DOTALL)
_LIQUID_BLOCKS_REMOVED = re.compile(
    r"(?<!{){%-?\s*(comment|capture)\b[^%]*?-?%}.*?{%-?\s*end\1\s*-?%}", re.DOTALL
)
_LIQUID_HIGHLIGHT = re.compile(
    r"(?<!{){%-?\s*highlight\s+([\w+#.-]+)[^%]*?-?%}\n?(.*?)\n?{%-?\s*endhighlight\s*-?%}",
    re.DOTALL,
)
_HUGO_HIGHLIGHT = re.compile(
    r"{{([<%])\s*highlight\s+\"?([\w+#.-]+)\"?[^>%]*?[>%]}}\n?(.*?)\n?"
    r"{{[<%]\s*/\s*highlight\s*[>%]}}",
    re.DOTALL,
)
# [text]({% post_url … %}), [text]({{< ref … >}}), [text]({{ "/docs/" | relative_url }}):
# links to other pages of the site, which have no address we know; the text stays.
_SITE_LINK = re.compile(
    r"\[([^\]]*)\]\(\s*(?:{%-?\s*(?:post_url|link)\b.*?%}|{{[<%]\s*(?:rel)?ref\b.*?[>%]}}"
    r"|{{-?(?![<%]).*?}})"
    r"[^)]*\)",
    re.DOTALL,
)
# Not preceded by "{": "{{% notice %}}" is a Hugo shortcode, not a Liquid tag.
_LIQUID_TAG = re.compile(r"(?<!{){%-?\s*(\w+)(.*?)-?%}", re.DOTALL)
_LIQUID_OUTPUT = re.compile(r"{{-?(?![<%]).*?-?}}", re.DOTALL)
_HUGO_SHORTCODE = re.compile(r"{{([<%])\s*(/?)\s*([\w./-]+)(.*?)\s*[>%]}}", re.DOTALL)

_WP_SHORTCODE = re.compile(
    r"\[(caption|wp_caption|gallery|embed|audio|video|playlist|youtube|vimeo|gist|code|"
    r"sourcecode|source)\b([^\]]*)\](?:(.*?)\[/\1\])?",
    re.DOTALL | re.IGNORECASE,
)


class _Protected:
    """Text set aside while the rest is rewritten, put back at the end."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def hold(self, text: str) -> str:
        self.parts.append(text)
        return _PLACEHOLDER.format(len(self.parts) - 1)

    def restore(self, text: str) -> str:
        return _PLACEHOLDER_RE.sub(lambda found: self.parts[int(found.group(1))], text)


def render_blog_syntax(markdown: str) -> str:
    """Markdown with Liquid tags and Hugo shortcodes rewritten as readable Markdown."""
    protected = _Protected()
    text = markdown.replace("\x00", "")
    text = _LIQUID_RAW.sub(lambda found: protected.hold(found.group(1)), text)
    text = _HUGO_ESCAPED.sub(
        lambda found: protected.hold(
            "{{" + found.group(1) + " " + found.group(2).strip() + " " + found.group(3) + "}}"
        ),
        text,
    )
    text = _LIQUID_BLOCKS_REMOVED.sub("", text)
    text = _LIQUID_HIGHLIGHT.sub(
        lambda found: protected.hold(_fence(found.group(1), found.group(2))), text
    )
    text = _HUGO_HIGHLIGHT.sub(
        lambda found: protected.hold(_fence(found.group(2), found.group(3))), text
    )
    text = _SITE_LINK.sub(lambda found: found.group(1), text)
    text = _LIQUID_TAG.sub(_liquid_tag, text)
    text = _LIQUID_OUTPUT.sub("", text)
    text = _HUGO_SHORTCODE.sub(_hugo_shortcode, text)
    return protected.restore(text)


def render_wordpress_shortcodes(content: str) -> str:
    """WordPress post HTML with its common shortcodes rewritten as HTML or removed.

    Only the shortcodes WordPress itself and its most common plugins register are
    touched: brackets in ordinary text ("[sic]") stay as they are.
    """
    previous = None
    while previous != content:  # [caption] may hold an [embed]
        previous = content
        content = _WP_SHORTCODE.sub(_wordpress_shortcode, content)
    return content


def _fence(language: str, code: str) -> str:
    return f"\n```{language}\n{code.strip(chr(10))}\n```\n"


def _arguments(raw: str) -> tuple[list[str], dict[str, str]]:
    """A shortcode's positional and named arguments (`a "b c" key="value"`)."""
    try:
        words = shlex.split(raw)
    except ValueError:
        words = raw.split()
    positional: list[str] = []
    named: dict[str, str] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if equals and re.fullmatch(r"[\w-]+", key):
            named[key.lower()] = value
        else:
            positional.append(word)
    return positional, named


def _link(url: str, text: str) -> str:
    return f"[{text}]({url})" if url.startswith(("http://", "https://")) else ""


def _embed_link(name: str, positional: list[str], named: dict[str, str]) -> str | None:
    """A link standing for an embedded video, post or gist; None for other names."""
    first = named.get("id") or (positional[0] if positional else "")
    if name == "youtube":
        return _link(f"https://www.youtube.com/watch?v={first}", "Watch the video on YouTube")
    if name == "vimeo":
        return _link(f"https://vimeo.com/{first}", "Watch the video on Vimeo")
    if name in ("x", "tweet", "twitter"):
        user = named.get("user") or (positional[0] if len(positional) > 1 else "")
        status = named.get("id") or (positional[-1] if positional else "")
        return _link(f"https://x.com/{user or 'i'}/status/{status}", "See the post on X")
    if name == "instagram":
        return _link(f"https://www.instagram.com/p/{first}/", "See the post on Instagram")
    if name == "gist":
        path = "/".join(positional[:2]) if len(positional) > 1 else first
        return _link(f"https://gist.github.com/{path}", "See the code on GitHub")
    return None


def _liquid_tag(found: re.Match[str]) -> str:
    name = found.group(1).lower()
    positional, named = _arguments(found.group(2))
    embed = _embed_link(name, positional, named)
    if embed is not None:
        return embed
    # if/for/include/assign/link…: a site builder's logic, nothing for a reader.
    return ""


def _hugo_shortcode(found: re.Match[str]) -> str:
    closing, name = found.group(2), found.group(3).lower()
    if closing:
        return ""
    positional, named = _arguments(found.group(4))
    embed = _embed_link(name, positional, named)
    if embed is not None:
        return embed
    if name == "figure":
        src = named.get("src", "")
        caption = named.get("caption") or named.get("title") or ""
        alt = named.get("alt") or caption
        image = f"![{alt}]({src})" if src else ""
        return f"{image}\n\n*{caption}*" if caption else image
    # Paired shortcodes (notice, tab…) keep their inner text; the rest go.
    return ""


def _wordpress_shortcode(found: re.Match[str]) -> str:
    name = found.group(1).lower()
    positional, named = _arguments(html.unescape(found.group(2)))
    inner = found.group(3) or ""
    if name in ("caption", "wp_caption"):
        return inner
    if name in ("code", "sourcecode", "source"):
        return f"<pre><code>{inner}</code></pre>"
    if name in ("embed", "audio", "video", "youtube", "vimeo", "gist"):
        url = inner.strip() or named.get("src", "") or named.get("url", "")
        if not url and positional:
            url = positional[0]
        if url.startswith(("http://", "https://")):
            return f'<p><a href="{html.escape(url)}">{html.escape(url)}</a></p>'
        return ""
    return ""  # gallery, playlist: nothing an email can show
