"""premailer inlines the CSS for mail clients that ignore <style> (step 4).

Set so the responsive layout survives: the <style> blocks are kept and !important
is not stripped (MJML's column widths and mobile rules live in @media rules that
only win with it), nothing is fetched from the network, and cssutils stays quiet.
premailer pulls in requests and cssutils, so it is imported only here.
"""

from __future__ import annotations

import logging


def inline_css(html: str) -> str:
    from premailer import Premailer

    doctype = "<!doctype html>"
    out = Premailer(
        html,
        allow_network=False,
        keep_style_tags=True,
        strip_important=False,
        remove_classes=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        cache_css_parsing=True,
    ).transform(pretty_print=False)
    if not out.lstrip().lower().startswith("<!doctype"):
        out = doctype + "\n" + out
    return out
