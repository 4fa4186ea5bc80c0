"""Every built-in email in a real browser and as classic Outlook reads it.

Headless Chromium (Debian's `chromium` with `chromium-driver`, driven by Selenium)
opens each email as a reader receives it, at a phone's 375 px and the desktop's
600 px, with its <style> block and without it (the Gmail app drops <style> for
accounts that are not Google's, keeping only inline styles), in light and dark
mode. Screenshots go to test-artifacts/email-clients/. The Outlook checks read the
HTML the way the Word engine does: layout carried by table cells and pixel widths,
never by padding or display on links.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import html as lxml_html

from newsletter.rendering.model import Snapshot
from tests.email_samples import builtin_emails, filled

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "email-clients"
EMAILS = ("digest", "article", "sequence-step", "confirmation")
_STYLE_BLOCK = re.compile(r"<style\b.*?</style>", re.DOTALL | re.IGNORECASE)


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Snapshot]:
    return builtin_emails(tmp_path_factory.mktemp("emails"))


# --- classic Outlook: what the Word engine needs, read from the HTML ---------------------


def _declarations(style: str) -> set[str]:
    return {d.split(":", 1)[0].strip().lower() for d in style.split(";") if ":" in d}


@pytest.mark.parametrize("name", EMAILS)
def test_outlook_no_link_carries_layout_with_padding_or_display(
    emails: dict[str, Snapshot], name: str
) -> None:
    tree = lxml_html.document_fromstring(emails[name].html)

    offending = [
        (a.text_content().strip(), a.get("style"))
        for a in tree.iter("a")
        if _declarations(a.get("style", "")) & {"padding", "display"}
        or any(d.startswith("padding-") for d in _declarations(a.get("style", "")))
    ]
    assert offending == []


@pytest.mark.parametrize("name", EMAILS)
def test_outlook_buttons_and_navigation_are_table_cells(
    emails: dict[str, Snapshot], name: str
) -> None:
    tree = lxml_html.document_fromstring(emails[name].html)
    html = emails[name].html

    buttons = [a for a in tree.iter("a") if "button" in a.get("class", "").split()]
    if name != "article":  # a single article has no button; the rest do
        assert buttons
    for a in buttons:
        cell = a.getparent()
        assert cell.tag == "td" and "padding" in _declarations(cell.get("style", ""))
    # Classic Outlook draws each button as a VML shape instead.
    assert html.count("<v:roundrect") == len(buttons)
    for a in tree.iter("a"):
        if a.text_content().strip().startswith(("← Previous", "Next:")):
            assert a.getparent().tag == "td"


@pytest.mark.parametrize("name", EMAILS)
def test_outlook_every_image_has_a_pixel_width_within_the_column(
    emails: dict[str, Snapshot], name: str
) -> None:
    images = list(lxml_html.document_fromstring(emails[name].html).iter("img"))

    for img in images:
        assert re.fullmatch(r"\d+", img.get("width", "")), img.get("width")
        assert int(img.get("width")) <= 536
        assert "max-width:100%" in img.get("style", "").replace(" ", "")
    if name in ("digest", "article"):
        assert images, "the samples carry a hero image"


@pytest.mark.parametrize("name", EMAILS)
def test_outlook_an_mso_table_wraps_the_fluid_container(
    emails: dict[str, Snapshot], name: str
) -> None:
    html = emails[name].html
    opening = re.search(
        r'<!--\[if mso\]><table role="presentation" align="center" width="600"[^>]*>'
        r"<tr><td><!\[endif\]-->\s*<div class=\"container\" style=\"([^\"]*)\"",
        html,
    )

    assert opening is not None
    assert "max-width:600px" in opening.group(1).replace(" ", "")
    assert "<!--[if mso]></td></tr></table><![endif]-->" in html[opening.end() :]
    assert "<o:PixelsPerInch>96</o:PixelsPerInch>" in html


@pytest.mark.parametrize("name", EMAILS)
def test_preheader_is_hidden_without_same_colour_text(
    emails: dict[str, Snapshot], name: str
) -> None:
    tree = lxml_html.document_fromstring(emails[name].html)
    [preheader] = [d for d in tree.iter("div") if "preheader" in d.get("class", "")]
    style = preheader.get("style", "").replace(" ", "")

    assert "display:none" in style and "mso-hide:all" in style
    assert "color" not in _declarations(style) and "font-size" not in _declarations(style)
    # Padded, so the inbox preview does not run on into the email's first words.
    assert preheader.text_content().count("\u200c") >= 30


@pytest.mark.parametrize("name", EMAILS)
def test_both_colour_schemes_are_declared(emails: dict[str, Snapshot], name: str) -> None:
    html = emails[name].html

    assert '<meta name="color-scheme" content="light dark">' in html
    assert "@media (prefers-color-scheme: dark)" in html


# --- a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (scripts/ensure-browser installs it)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("chromium and chromium-driver are missing: run scripts/ensure-browser")
    profile = tempfile.mkdtemp(prefix="newsletter-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


MEASURE = """
const texts = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (!node.textContent.trim()) continue;
  const range = document.createRange();
  range.selectNodeContents(node);
  const box = range.getBoundingClientRect();
  const style = getComputedStyle(node.parentElement);
  if (box.width === 0 || box.height === 0 || style.visibility === 'hidden') continue;
  let bg = null;
  for (let el = node.parentElement; el; el = el.parentElement) {
    const c = getComputedStyle(el).backgroundColor;
    const m = c.match(/[\\d.]+/g);
    if (m && (m.length < 4 || parseFloat(m[3]) > 0)) { bg = c; break; }
  }
  texts.push({text: node.textContent.trim().slice(0, 50), size: parseFloat(style.fontSize),
              weight: parseInt(style.fontWeight), color: style.color,
              background: bg || 'rgb(255, 255, 255)'});
}
return {viewport: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
        height: document.documentElement.scrollHeight, texts: texts};
"""


def _open(browser: Any, path: Path, width: int, dark: bool) -> dict[str, Any]:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 500},
    )
    scheme = "dark" if dark else "light"
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    browser.get(path.as_uri())
    found: dict[str, Any] = browser.execute_script(MEASURE)
    return found


def _screenshot(browser: Any, height: int, path: Path, width: int) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": width,
            "height": min(height, 8000),
            "deviceScaleFactor": 1,
            "mobile": width < 500,
        },
    )
    browser.save_screenshot(str(path))


def _page(snapshot: Snapshot, name: str, with_style: bool) -> Path:
    html = filled(snapshot)
    if not with_style:
        html = _STYLE_BLOCK.sub("", html)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}-{'style' if with_style else 'nostyle'}.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("with_style", [True, False], ids=["style", "no-style"])
@pytest.mark.parametrize("width", [375, 600])
@pytest.mark.parametrize("name", EMAILS)
def test_email_fits_the_screen_and_body_text_is_readable(
    browser: Any, emails: dict[str, Snapshot], name: str, width: int, with_style: bool
) -> None:
    page = _page(emails[name], name, with_style)

    found = _open(browser, page, width, dark=False)
    _screenshot(browser, found["height"], page.with_name(f"{page.stem}-{width}.png"), width)

    assert found["viewport"] == width
    assert found["scrollWidth"] <= width, f"{name} is {found['scrollWidth']} px wide at {width}"
    if width == 375 and with_style:
        smallest = min(found["texts"], key=lambda t: t["size"])
        assert smallest["size"] >= 14, f"{smallest['text']!r} is {smallest['size']} px"


def _luminance(color: str) -> float:
    channels = [float(v) / 255 for v in re.findall(r"[\d.]+", color)[:3]]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two CSS rgb() colours."""
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("name", EMAILS)
def test_every_text_has_wcag_aa_contrast_in_light_and_dark_mode(
    browser: Any, emails: dict[str, Snapshot], name: str, dark: bool
) -> None:
    page = _page(emails[name], name, with_style=True)

    found = _open(browser, page, 600, dark)
    scheme = "dark" if dark else "light"
    _screenshot(browser, found["height"], page.with_name(f"{name}-{scheme}-600.png"), 600)

    weak = []
    for text in found["texts"]:
        large = text["size"] >= 24 or (text["size"] >= 18.66 and text["weight"] >= 700)
        ratio = contrast(text["color"], text["background"])
        if ratio < (3.0 if large else 4.5):
            weak.append(f"{text['text']!r}: {ratio:.2f} ({text['color']} on {text['background']})")
    assert weak == []
