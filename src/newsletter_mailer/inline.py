"""premailer inlines the CSS for mail clients that ignore <style> (step 4).

Set so the responsive layout survives: the <style> blocks are kept and !important
is not stripped (MJML's column widths and mobile rules live in @media rules that
only win with it), nothing is fetched from the network, and cssutils stays quiet.

Set so the inliner adds nothing MJML did not write, as official MJML's
`<mj-style inline="inline">` does: MJML's reset block (`#outlook a`, `table, td`,
`img`, `p`) stays in the head, where Outlook reads it, instead of being copied into
every table (85 `mso-table-lspace` copies the Nu checker counts as errors); and no
presentational attributes are written from CSS, so each image keeps MJML's pixel
`width` (Outlook's Word engine sizes images from it, not from `width:100%`).
premailer pulls in requests and cssutils, so it is imported only here.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import types
from contextlib import contextmanager
from functools import lru_cache


class _Deferred(types.ModuleType):
    """Stands in for a module a library imports but may never use; imports it on first use."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


@contextmanager
def _deferred(name: str):
    """While importing a library, let its `import name` bind a _Deferred instead of the module."""
    if name in sys.modules:
        yield
        return
    stand_in = sys.modules[name] = _Deferred(name)
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]  # everyone else who imports it gets the real module


@lru_cache(maxsize=1)
def _premailer():
    """premailer's Premailer class, imported on first use and set up for speed (output unchanged).

    * cssutils validates each declaration against its CSS profiles: that only feeds its log
      (silenced here) and lazily compiles huge regexes, about 0.2 s on the first inline of a
      process. With the profiles removed nothing is validated; parsing and serialising, and
      so premailer's output, are the same.
    * premailer caches parsed declarations in one LFU cache of 128 entries; an MJML email has
      more distinct inline styles than that, so every rebuild re-parsed some. 4096 keeps them.
    * premailer imports requests only to fetch stylesheets from the network, which
      allow_network=False never does; importing it is a seventh of `newsletter compose`. So
      premailer's `requests` is a stand-in that imports the real one if it is ever used.
    """
    added = "PREMAILER_CACHE_MAXSIZE" not in os.environ
    if added:  # read once, when premailer is imported; not left for child processes
        os.environ["PREMAILER_CACHE_MAXSIZE"] = "4096"
    try:
        import cssutils

        with _deferred("requests"):
            from premailer import Premailer
    finally:
        if added:
            os.environ.pop("PREMAILER_CACHE_MAXSIZE", None)

    cssutils.profile.removeProfile(all=True)
    return Premailer


# MJML's reset stylesheet opens with `#outlook a` (mjml and mjml-python alike); premailer skips
# a <style data-premailer="ignore"> block and keeps it as it was, without the attribute.
_MJML_RESET = re.compile(r'<style(?P<attrs>[^>]*)>(?=\s*#outlook a\b)')
# premailer would turn CSS width/height/text-align/background-color into these attributes.
_PRESENTATIONAL = ["width", "height", "align", "valign", "bgcolor"]


def inline_css(html: str) -> str:
    Premailer = _premailer()
    html = _MJML_RESET.sub(r'<style\g<attrs> data-premailer="ignore">', html, count=1)

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
        disable_basic_attributes=_PRESENTATIONAL,
        align_floating_images=False,
    ).transform(pretty_print=False)
    if not out.lstrip().lower().startswith("<!doctype"):
        out = doctype + "\n" + out
    return out
