"""Field checks shared by the issue file (schema) and the settings (settings): one rule each.

Each check is a pydantic AfterValidator: it returns the value (perhaps normalised) or raises
ValueError with words a user can act on; sourcefile adds the file, line and field.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from newsletter_mailer.mergefields import EXAMPLE, MERGE_RE

SCHEMES = ("http://", "https://", "mailto:")
# What opens any Jinja construct: only the merge fields of MERGE_RE may use it in content.
JINJA_OPEN = re.compile(r"\{\{|\{%|\{#")
# Characters no text needs and MJML/XML cannot carry (a YAML "\x1b" or "\\0" escape gets them in).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not pass silently); values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def single_line(v: str) -> str:
    if "\r" in v or "\n" in v:
        raise ValueError("must be one line (no line breaks)")
    return v


def merge_fields_only(text: str) -> str:
    """Refuse template syntax other than plain merge fields."""
    rest = MERGE_RE.sub("", text)
    m = JINJA_OPEN.search(rest)
    if m:
        snippet = rest[m.start(): m.start() + 30].splitlines()[0]
        raise ValueError(f"only merge fields like {EXAMPLE} are allowed, found '{snippet}'")
    return text


def content(v: str) -> str:
    """Text shown to readers: no control characters, no template syntax but merge fields."""
    bad = CONTROL.search(v)
    if bad:
        kind = "a control character" if ord(bad.group()) < 0x80 else "an invalid character"
        raise ValueError(f"contains {kind} (U+{ord(bad.group()):04X}) at position {bad.start() + 1}; remove it")
    return merge_fields_only(v)


def not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def no_merge_fields(v: str, what: str) -> str:
    """For values used as they are (an image address, a file path): a merge field would stay literal."""
    if JINJA_OPEN.search(v):
        raise ValueError(f"'{v[:60]}' must be {what}, without merge fields")
    return v


def link_url(v: str) -> str:
    v = v.strip()
    # A merge field may stand in a link (https://…/survey?e={{ email }}): judge the URL around it.
    probe = MERGE_RE.sub("x", v)
    if not probe.lower().startswith(SCHEMES) or any(c.isspace() or ord(c) < 32 for c in probe):
        raise ValueError(f"'{v[:60]}' is not an http(s) or mailto link (use https://… or mailto:…)")
    if probe.lower().startswith(("http://", "https://")) and len(probe.split("//", 1)[1].split("/")[0]) == 0:
        raise ValueError(f"'{v[:60]}' has no host")
    return v


def http_url(v: str) -> str:
    v = link_url(v)
    if v.lower().startswith("mailto:"):
        raise ValueError(f"'{v[:60]}' must be an http(s) address")
    return no_merge_fields(v, "a plain http(s) address")


OneLine = Annotated[str, AfterValidator(single_line), AfterValidator(content)]
HttpURL = Annotated[str, AfterValidator(http_url)]
