"""The footer no list email goes without, and the check that it is there and visible.

Every campaign and drip email carries why the reader gets it, visible unsubscribe
and preferences links, the organisation and its postal address (US CAN-SPAM asks
for a valid physical postal address in every commercial email). Built-in templates
include it; a stored template places `{{ footer }}` where it wants it and may style
it, but not drop or hide it. `check_opt_out` reads the rendered, CSS-inlined HTML
and the text part of every email that is rendered for sending, so neither a stored
template nor a publisher's override of a built-in file can send without it.

"Hidden" means what a mail client would not show: inside a comment (an MSO
conditional included), `<head>`, `<title>`, `<style>`, `<script>`, `<template>` or
`<noscript>`; only in an `[if !mso]` block; an element or ancestor with `hidden`,
`display:none`,
`visibility:hidden`, `opacity:0`, `mso-hide:all`, a zero height or width with
overflow hidden, or text under 8 px, whether written inline or by a rule left in a
`<style>` block (premailer inlines the rest). Colour against background is not
judged: contrast is a reader's matter, hiding by colour a deliberate act we log.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import cssutils
from lxml import etree
from lxml import html as lxml_html
from lxml.cssselect import CSSSelector
from markupsafe import Markup

from newsletter.errors import InvalidInputError
from newsletter.rendering.model import Sender
from newsletter.rendering.slots import sentinel

FOOTER_NAME = "footer"  # what templates write: {{ footer }}
MIN_FONT_PX = 8.0
_INVISIBLE_TAGS = frozenset({"head", "title", "style", "script", "template", "noscript"})
_LENGTH = re.compile(r"^\s*(-?[\d.]+)\s*(px|pt|em|rem|%)?\s*$")
_PSEUDO = re.compile(r"::?[a-zA-Z-]+(\([^)]*\))?")
# What every client but classic Outlook shows (Outlook skips it).
_NOT_OUTLOOK = re.compile(r"<!--\[if !mso\]><!-->.*?<!--<!\[endif\]-->", re.DOTALL)


class MissingFooterError(InvalidInputError):
    """An email without its footer, or with a part of it hidden."""


def _declarations(style: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in style.split(";"):
        name, sep, value = item.partition(":")
        if sep:
            found[name.strip().lower()] = value.replace("!important", "").strip().lower()
    return found


def _px(value: str) -> float | None:
    match = _LENGTH.match(value)
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2) or "px"
    return {"px": number, "pt": number * 4 / 3}.get(unit)


def hiding_reason(style: str) -> str:
    """What in these declarations hides an element ("" when nothing does)."""
    d = _declarations(style)
    if d.get("display") == "none":
        return "display:none"
    if d.get("visibility") in ("hidden", "collapse"):
        return "visibility:hidden"
    if d.get("mso-hide") == "all":
        return "mso-hide:all"
    if d.get("opacity") is not None and _px(d["opacity"]) == 0:
        return "opacity:0"
    size = _px(d.get("font-size", ""))
    if size is not None and size < MIN_FONT_PX:
        return f"font-size:{d['font-size']}"
    if d.get("overflow") == "hidden":
        for side in ("height", "max-height", "width", "max-width"):
            if _px(d.get(side, "")) == 0:
                return f"{side}:0 with overflow:hidden"
    return ""


def _hidden_by_rules(tree: etree._Element) -> dict[etree._Element, str]:
    """Elements that rules left in <style> blocks (media queries…) would hide."""
    hidden: dict[etree._Element, str] = {}
    for block in tree.iter("style"):
        for selector, reason in _hiding_selectors(block.text or ""):
            for element in selector(tree):
                hidden.setdefault(element, reason)
    return hidden


@functools.lru_cache(maxsize=64)
def _hiding_selectors(css: str) -> tuple[tuple[CSSSelector, str], ...]:
    """The selectors of a stylesheet's rules that hide what they match (parsed once per
    distinct stylesheet: a run's variants and the next run share it)."""
    found = []
    for rule in _style_rules(cssutils.parseString(css, validate=False).cssRules):
        reason = hiding_reason(rule.style.cssText)
        if not reason:
            continue
        for selector in rule.selectorList:
            text = _PSEUDO.sub("", selector.selectorText).strip() or "*"
            try:
                found.append((CSSSelector(text), reason))
            except Exception:  # a selector lxml cannot evaluate cannot hide anything
                continue
    return tuple(found)


def _style_rules(rules: object) -> Iterator[cssutils.css.CSSStyleRule]:
    for rule in rules:  # type: ignore[attr-defined]
        if rule.type == rule.STYLE_RULE:
            yield rule
        elif rule.type == rule.MEDIA_RULE:
            yield from _style_rules(rule.cssRules)


def _why_hidden(element: etree._Element, by_rules: dict[etree._Element, str]) -> str:
    sized = False  # the nearest font-size decides the text's size; outer ones do not
    for node in (element, *element.iterancestors()):
        if not isinstance(node.tag, str):
            continue
        if node.tag in _INVISIBLE_TAGS:
            return f"it is inside <{node.tag}>"
        if node.get("hidden") is not None:
            return "an element around it has the hidden attribute"
        style = node.get("style", "")
        declared = _declarations(style)
        if sized:
            declared.pop("font-size", None)
        sized = sized or "font-size" in declared
        reason = hiding_reason(";".join(f"{k}:{v}" for k, v in declared.items()))
        reason = reason or by_rules.get(node, "")
        if reason:
            return f"an element around it has {reason}"
    return ""


def _holders(root: etree._Element, text: str) -> list[etree._Element]:
    """The innermost elements whose own text holds `text`, else (the text spans several
    elements) the innermost elements whose whole text holds it."""
    found = []
    for string in root.xpath("//text()[contains(., $text)]", text=text):
        element = string.getparent()
        found.append(element.getparent() if string.is_tail else element)
    if found:
        return [e for e in found if e is not None]
    return [
        element
        for element in root.iter()
        if isinstance(element.tag, str)
        and text in element.text_content()
        and not any(isinstance(c.tag, str) and text in c.text_content() for c in element)
    ]


def _link_problem(link: etree._Element, by_rules: dict[etree._Element, str]) -> str:
    if not link.text_content().strip():
        return "it has no text"
    return _why_hidden(link, by_rules)


def check_opt_out(html: str, text: str, sender: Sender, marker: str = "") -> None:
    """Raise MissingFooterError naming what is missing or hidden: the unsubscribe or
    preferences link (the slots of the render with `marker`), the organisation or the
    postal address, in the HTML or the text."""
    unsubscribe = sentinel("unsubscribe_url", marker)
    preferences = sentinel("preferences_url", marker)
    required_text = {"unsubscribe link": unsubscribe, "preferences link": preferences}
    if sender.organization:
        required_text["organisation"] = sender.organization
    if sender.postal_address:
        required_text["postal address"] = sender.postal_address
    for what, value in required_text.items():
        if value not in text:
            raise MissingFooterError(
                f"the text part has no {what}: put {{{{ footer }}}} in the text template"
            )
    outside_outlook_only = _NOT_OUTLOOK.sub("", html)
    for what, url in (("unsubscribe link", unsubscribe), ("preferences link", preferences)):
        if url in html and url not in outside_outlook_only:
            raise MissingFooterError(
                f"the HTML shows its {what} only outside classic Outlook ([if !mso])"
            )
    tree = lxml_html.document_fromstring(html)
    by_rules = _hidden_by_rules(tree)
    for what, url in (("unsubscribe link", unsubscribe), ("preferences link", preferences)):
        links = [a for a in tree.iter("a") if a.get("href", "").strip() == url]
        if not links:
            raise MissingFooterError(
                f"the HTML has no {what}: put {{{{ footer }}}} in the template (you may style it)"
            )
        problems = [_link_problem(link, by_rules) for link in links]
        if all(problems):
            raise MissingFooterError(f"the HTML hides its {what}: {problems[0]}")
    body = tree.find("body")
    for what in ("organisation", "postal address"):
        value = required_text.get(what, "")
        if not value:
            continue
        holders = _holders(body if body is not None else tree, value)
        if not holders:
            raise MissingFooterError(f"the HTML does not show the {what} ({value})")
        problems = [_why_hidden(holder, by_rules) for holder in holders]
        if all(problems):
            raise MissingFooterError(f"the HTML hides the {what}: {problems[0]}")


def as_footer(html: str) -> Markup:
    """The footer's HTML as templates insert it (already escaped by its template)."""
    return Markup(html)
