"""CSS inlining: the stylesheet's rules moved onto the elements, once per run."""

from __future__ import annotations

import logging

from premailer import Premailer


def inline_css(html: str) -> str:
    """Move the <style> rules onto the elements; @media rules stay in a <style> block."""
    return str(
        Premailer(
            html,
            keep_style_tags=False,
            remove_classes=False,
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            allow_network=False,
        ).transform(pretty_print=False)
    )
