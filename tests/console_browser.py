"""What the console's browser tests share: a headless Chromium driven by Selenium,
axe-core (vendored in tests/vendor/axe-core/) injected into pages, screenshots,
waits on conditions (never sleeps), `ConsolePages`, the one driver of the
console's pages that each browser test module builds on, and the stack it looks at
(`sending_stack`, `console_in_chromium`)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from newsletter.cli.processes import build_app
from newsletter.config import Settings
from newsletter.db import make_engine, make_sessionmaker
from tests.api_server import PASSWORD, ServerThread
from tests.factories import settings_for
from tests.processes import RedisServer, SchedulerProcess, WorkerProcess
from tests.smtp_sink import SinkHandler, SmtpSink

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

# A module logs in many times from one address: the login limits are tested elsewhere.
LOGINS = {"login_limit_per_account": 50, "login_limit_per_ip": 200}

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


@contextmanager
def console_in_chromium(settings: Settings) -> Iterator[tuple[str, Any]]:
    """`newsletter serve`'s app for `settings` on a real uvicorn server, and a Chromium
    to look at it; the URL names localhost, a secure context, so the console's Secure
    cookies work over plain http."""
    with ServerThread(build_app(settings)) as server, chromium() as browser:
        yield server.url.replace("127.0.0.1", "localhost"), browser


@contextmanager
def sending_stack(
    database_url: str, handler: SinkHandler | None = None, **overrides: object
) -> Iterator[tuple[Settings, SmtpSink, sessionmaker[Session]]]:
    """What a send goes through: the database emptied, a private Redis, an aiosmtpd
    sink (answering as `handler` says), a Celery worker and a scheduler process
    ticking every 0.3 s; their settings, the sink and sessions of the database."""
    from tests.conftest import _truncate_all

    engine = make_engine(database_url)
    _truncate_all(engine)
    redis = RedisServer().start()
    with SmtpSink(handler) as sink:
        settings = settings_for(
            database_url,
            mail_url=sink.url,
            broker_url=redis.url,
            scheduler_interval=0.3,
            chunk_size=10,
            **LOGINS,
            **overrides,
        )
        worker = WorkerProcess(settings).start()
        scheduler = SchedulerProcess(settings).start()
        try:
            yield settings, sink, make_sessionmaker(engine)
        finally:
            engine.dispose()
            scheduler.stop()
            worker.stop()
            redis.stop()


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


def page_gone(element: Any) -> bool:
    """Whether the page that held `element` is gone (the browser navigated)."""
    from selenium.common.exceptions import WebDriverException

    try:
        element.is_enabled()
        return False
    except WebDriverException:  # stale, or "node does not belong to the document"
        return True


@dataclass
class ConsolePages:
    """A browser looking at a running console: it opens pages, fills and submits
    forms, logs in and out, and runs axe-core on the pages it is asked to check.

    Every check is kept in `visited` (a page seen twice, e.g. before and after a form,
    is two entries) for a test to assert that none found a violation. Pages opened
    are checked unless told otherwise; pages a form leads to only with
    `check_submitted`."""

    url: str
    browser: Any
    visited: dict[str, list[dict[str, Any]]] = field(default_factory=dict, kw_only=True)
    check_submitted: bool = field(default=False, kw_only=True)

    def ready(self) -> None:
        wait_for(
            self.browser, lambda b: b.execute_script("return document.readyState") == "complete"
        )

    def open(self, path: str, check: bool = True) -> None:
        """Go to a console page; with `check`, run axe-core on it and keep the result."""
        self.browser.get(self.url + path)
        self.ready()
        if check:
            self.check()

    def check(self) -> None:
        """axe-core on the page as it is now."""
        path = self.browser.current_url.removeprefix(self.url)
        key = path if path not in self.visited else f"{path} ({len(self.visited)})"
        self.visited[key] = axe_violations(self.browser)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.browser.find_elements(By.CSS_SELECTOR, css))

    def submit(self, css: str) -> None:
        """Click a submit button and wait for the next page."""
        old = self.find("html")
        self.find(css).click()
        wait_for(self.browser, lambda b: page_gone(old))
        self.ready()
        if self.check_submitted:
            self.check()

    def notice(self) -> str:
        found = self.all("p.notice")
        return str(found[0].text) if found else ""

    def log_in(self, email: str, check: bool = True) -> None:
        """Log in afresh (no cookie of an earlier visit); with `check`, the login
        page is checked on the way."""
        self.browser.delete_all_cookies()
        self.open("/admin/login", check=check)
        self.find("#email").send_keys(email)
        self.find("#password").send_keys(PASSWORD)
        self.submit("form.stack button[type=submit]")
        assert self.browser.current_url.endswith("/admin/"), self.browser.current_url

    def log_out(self) -> None:
        self.submit("form[action='/admin/logout'] button")

    def preview_frames_shown(self) -> bool:
        """Whether the composer's two preview frames both show the email."""
        frames = self.all("#preview iframe")
        for frame in frames:
            self.browser.switch_to.frame(frame)
            try:
                text = self.find("body").text
            finally:  # a frame swapped out meanwhile must not leave the browser inside it
                self.browser.switch_to.default_content()
            if "Riverside Clinic" not in text:
                return False
        return len(frames) == 2

    def wait_for_preview_frames(self) -> None:
        """Both preview frames rendered; a timeout says what the pane showed instead."""
        from selenium.common.exceptions import TimeoutException

        try:
            wait_for(self.browser, lambda b: self.preview_frames_shown())
        except TimeoutException:
            pane = self.browser.execute_script(
                "const e = document.querySelector('#preview'); return e ? e.outerHTML : null"
            )
            where = f"{self.browser.current_url} ({self.browser.title})"
            raise AssertionError(
                f"the preview frames did not load on {where}; the pane: {pane!r:.2000}"
            ) from None
