"""What the console's browser tests share: a headless Chromium driven by Selenium,
axe-core (vendored in tests/vendor/axe-core/) injected into pages, screenshots,
and waits on conditions (never sleeps)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
AXE = (Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js").read_text()
ARTIFACTS = ROOT / "test-artifacts" / "console"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)

RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"], iframes: false})
  .then(r => done(r.violations.map(v => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: " + n.failureSummary)}))))
  .catch(e => done([{id: "axe-error", impact: "error", help: String(e), nodes: []}]));
"""


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium and chromedriver with a fresh profile (scripts/ensure-browser)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromium-driver are missing: run scripts/ensure-browser")
    profile = tempfile.mkdtemp(prefix="newsletter-console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_script_timeout(90)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(browser: Any, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    """Until `condition` holds; an element htmx swapped out meanwhile is looked up again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(browser, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(
        condition
    )


def axe_violations(browser: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (frames are other documents:
    the emails shown in previews are checked by tests/test_email_clients.py)."""
    if not browser.execute_script("return typeof axe !== 'undefined'"):
        browser.execute_script(AXE)
    found: list[dict[str, Any]] = browser.execute_async_script(RUN_AXE)
    return found


def set_width(browser: Any, width: int, height: int = 900, dark: bool = False) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )


def page_width(browser: Any) -> int:
    width: int = browser.execute_script("return document.documentElement.scrollWidth")
    return width


def screenshot(
    browser: Any, name: str, width: int, load: Callable[[], None], max_height: int = 2400
) -> Path:
    """The whole page (up to `max_height`) at `width`, into test-artifacts/console/.
    The page is measured, then loaded again in a viewport of its own height, so what
    is captured (frames too) was laid out and painted at that size."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    set_width(browser, width)
    load()
    height = browser.execute_script("return document.documentElement.scrollHeight")
    set_width(browser, width, min(int(height), max_height))
    load()
    path = ARTIFACTS / f"{name}-{width}.png"
    browser.save_screenshot(str(path))
    set_width(browser, width)
    return path
