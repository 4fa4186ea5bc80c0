"""Is a hit a person's or a machine's? Machine events are labelled, never dropped.

A hit is a machine's when (first reason wins):

1. it is a HEAD request (link checkers ask for headers only);
2. it says it is a prefetch or a preview (`Purpose`/`Sec-Purpose: prefetch`,
   `X-Purpose: preview`, `X-Moz: prefetch`);
3. it has no user agent;
4. its user agent is one of the mail security scanners and proxies listed in
   `KNOWN_AGENTS` below, or one that crawlerdetect knows as a bot (link checkers,
   HTTP libraries, previewers, search crawlers);
5. the user agent is exactly `Mozilla/5.0`: Apple Mail Privacy Protection, whose
   proxy loads every image of every message when it is delivered, read or not;
6. it comes within NEWSLETTER_TRACKING_MACHINE_SECONDS (default 10) of the moment
   the message was handed over: nobody reads that fast, scanners at the receiving
   server do;
7. (clicks, decided in events.py) three links of one message, or all of them when it
   has fewer (at least two), are clicked within NEWSLETTER_TRACKING_BURST_SECONDS
   (default 2): what scanners that follow every link do.

Gmail's and Yahoo's image proxies fetch the pixel when the reader opens the message,
so their opens count as human (class `gmail-proxy`, `yahoo-proxy`); they cache the
image, so a second open of the same message is not seen.

No IP address is kept: `client_hash` is 64 bits of HMAC(secret, day + address), so
the events of one day can be told apart by client and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from crawlerdetect import CrawlerDetect

# (pattern, class, machine?) checked in order, before crawlerdetect.
KNOWN_AGENTS: tuple[tuple[re.Pattern[str], str, bool], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name, machine)
    for pattern, name, machine in (
        (r"GoogleImageProxy", "gmail-proxy", False),
        (r"YahooMailProxy", "yahoo-proxy", False),
        (r"Barracuda", "scanner:barracuda", True),
        (r"Proofpoint|urldefense", "scanner:proofpoint", True),
        (r"Mimecast", "scanner:mimecast", True),
        (r"SafeLinks|Microsoft Office Protocol Discovery", "scanner:microsoft", True),
        (r"BingPreview", "scanner:microsoft", True),
        (r"Symantec|MessageLabs", "scanner:symantec", True),
        (r"Trend ?Micro", "scanner:trendmicro", True),
        (r"Forcepoint|Websense", "scanner:forcepoint", True),
        (r"Sophos", "scanner:sophos", True),
        (r"IronPort|Cisco", "scanner:cisco", True),
        (r"FireEye|Trellix", "scanner:trellix", True),
        (r"Zscaler", "scanner:zscaler", True),
        (r"Check ?Point|Avanan", "scanner:checkpoint", True),
    )
)
APPLE_MPP_AGENT = "Mozilla/5.0"
_PREFETCH_HEADERS = ("purpose", "sec-purpose", "x-purpose", "x-moz")


@dataclass(frozen=True)
class Verdict:
    user_agent_class: str
    machine_reason: str  # "" for a person

    @property
    def machine(self) -> bool:
        return bool(self.machine_reason)


_detector = CrawlerDetect()
_detector_lock = threading.Lock()  # CrawlerDetect keeps its last match: not thread-safe


def _crawler(user_agent: str) -> str:
    """What crawlerdetect matched in the user agent, "" when it is no bot it knows."""
    with _detector_lock:
        if _detector.isCrawler(user_agent[:1000]):
            return str(_detector.getMatches() or "bot")
    return ""


def classify(
    method: str,
    user_agent: str,
    headers: Mapping[str, str],
    seconds_after_send: float | None,
    machine_seconds: float,
) -> Verdict:
    """The hit's user-agent class and, for a machine, why (see the module docstring)."""
    agent = user_agent.strip()
    agent_class = _agent_class(agent)
    if method.upper() == "HEAD":
        return Verdict(agent_class, "HEAD request")
    for name in _PREFETCH_HEADERS:
        value = headers.get(name, "").lower()
        if "prefetch" in value or "preview" in value:
            return Verdict(agent_class, f"prefetch ({name}: {value[:40]})")
    if not agent:
        return Verdict("none", "no user agent")
    for pattern, name, machine in KNOWN_AGENTS:
        if pattern.search(agent):
            if machine:
                return Verdict(name, f"known scanner ({name.removeprefix('scanner:')})")
            return Verdict(name, "")
    if agent == APPLE_MPP_AGENT:
        return Verdict("apple-mpp", "Apple Mail Privacy Protection proxy")
    matched = _crawler(agent)
    if matched:
        return Verdict("bot", f"known bot ({matched[:60]})")
    if seconds_after_send is not None and 0 <= seconds_after_send < machine_seconds:
        return Verdict(agent_class, f"{seconds_after_send:.0f} s after the message was sent")
    return Verdict(agent_class, "")


def _agent_class(agent: str) -> str:
    if not agent:
        return "none"
    for pattern, name, _ in KNOWN_AGENTS:
        if pattern.search(agent):
            return name
    if agent == APPLE_MPP_AGENT:
        return "apple-mpp"
    lowered = agent.lower()
    if "mobile" in lowered or "android" in lowered or "iphone" in lowered:
        return "mobile-browser"
    if lowered.startswith("mozilla/"):
        return "browser"
    return "other"


def client_hash(secret_key: str, address: str, moment: datetime) -> str:
    """64 bits of HMAC(secret, day + address): tells clients apart within a day only."""
    key = hashlib.sha256(b"newsletter-client:" + secret_key.encode()).digest()
    message = f"{moment:%Y-%m-%d}|{address}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:16]
