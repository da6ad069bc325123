"""Wrapping for the plain-text part: 72 columns, as mail readers and RFC 3676 expect.

The text template's `wrap` and `underline` filters. Each line of the input is one paragraph
(markdown_html.to_text joins the YAML's own line breaks), so the result is the same whether or
not the issue file was hard-wrapped. Words are never split, so a URL is never broken: one that
does not fit goes to a line of its own. A list item keeps its marker and hangs its other lines
under its first word.
"""

from __future__ import annotations

import re
import textwrap

WIDTH = 72
_LEAD = re.compile(r"^(\s*)((?:•|\d+\.)\s+)?")


def wrap(text: str, width: int = WIDTH) -> str:
    return "\n".join(_wrap_line(line, width) for line in str(text).split("\n"))


def _wrap_line(line: str, width: int) -> str:
    if not line.strip():
        return ""
    lead = _LEAD.match(line).group(0)
    return textwrap.fill(line[len(lead):], width, initial_indent=lead, subsequent_indent=" " * len(lead),
                         break_long_words=False, break_on_hyphens=False)


def underline(text: str, char: str = "-", width: int = WIDTH) -> str:
    """A heading, wrapped, over a rule as wide as its longest line (never wider than the wrap)."""
    wrapped = wrap(text, width)
    return wrapped + "\n" + char * min(width, max(map(len, wrapped.split("\n"))))
