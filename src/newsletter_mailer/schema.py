"""The issue file (issues/*.yaml) as typed pydantic models; also exported as JSON Schema."""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from newsletter_mailer import mergefields
from newsletter_mailer.markdown_html import check_markdown_links

_SCHEMES = ("http://", "https://", "mailto:")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _one_line(v: str) -> str:
    if "\r" in v or "\n" in v:
        raise ValueError("must be one line (no line breaks)")
    return v


# Characters no text needs and MJML/XML cannot carry (a YAML "\x1b" or "\\0" escape gets them in).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")


def _content(v: str) -> str:
    bad = _CONTROL.search(v)
    if bad:
        kind = "a control character" if ord(bad.group()) < 0x80 else "an invalid character"
        raise ValueError(f"contains {kind} (U+{ord(bad.group()):04X}) at position {bad.start() + 1}; remove it")
    mergefields.check(v)
    return v


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def _link_url(v: str) -> str:
    v = v.strip()
    # A merge field may stand in a link (https://…/survey?e={{ email }}): judge the URL around it.
    probe = mergefields.MERGE_RE.sub("x", v)
    if not probe.lower().startswith(_SCHEMES) or any(c.isspace() or ord(c) < 32 for c in probe):
        raise ValueError(f"'{v[:60]}' is not an http(s) or mailto link (use https://… or mailto:…)")
    if probe.lower().startswith(("http://", "https://")) and len(probe.split("//", 1)[1].split("/")[0]) == 0:
        raise ValueError(f"'{v[:60]}' has no host")
    return v


def _http_url(v: str) -> str:
    v = _link_url(v)
    if v.lower().startswith("mailto:"):
        raise ValueError(f"'{v[:60]}' must be an http(s) address")
    if mergefields._JINJA_OPEN.search(v):
        raise ValueError(f"'{v[:60]}' must be a plain http(s) address, without merge fields")
    return v


_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _image_src(v: str) -> str:
    """An http(s) address, or a path relative to the issue file (images/photo.png), kept normalised."""
    v = v.strip()
    if not v:
        raise ValueError("must not be empty")
    if v.lower().startswith(("http://", "https://")):
        return _http_url(v)
    if _SCHEME_RE.match(v) or v.startswith("//"):
        raise ValueError(f"'{v[:60]}' must be an http(s) address or a path relative to the issue file "
                         "(like images/photo.png)")
    if any(ord(c) < 32 or c == "\x7f" for c in v):
        raise ValueError("must not contain control characters")
    if mergefields._JINJA_OPEN.search(v):
        raise ValueError(f"'{v[:60]}' must be a plain file path, without merge fields")
    if "\\" in v:
        raise ValueError(f"'{v[:60]}': use / between folders, not \\")
    if v.startswith("/") or v.startswith("~"):
        raise ValueError(f"'{v[:60]}' is an absolute path: give a path relative to the issue file")
    norm = posixpath.normpath(v)
    if norm == "." or norm == ".." or norm.startswith("../") or v.endswith("/"):
        raise ValueError(f"'{v[:60]}' must name a file inside the issue file's folder")
    return norm


def _markdown(v: str) -> str:
    check_markdown_links(v)
    return v


def _date(v: Any) -> Any:
    if isinstance(v, str) and not _DATE_RE.match(v.strip()):
        raise ValueError(f"'{v[:30]}' is not a date written YYYY-MM-DD")
    if not isinstance(v, (str, dt.date)):
        raise ValueError("should be a date written YYYY-MM-DD")
    return v


Text = Annotated[str, AfterValidator(_content)]
OneLine = Annotated[str, AfterValidator(_one_line), AfterValidator(_content)]
Required = Annotated[str, AfterValidator(_not_blank), AfterValidator(_one_line), AfterValidator(_content)]
Markdown = Annotated[str, AfterValidator(_not_blank), AfterValidator(_content), AfterValidator(_markdown)]
OptionalMarkdown = Annotated[str, AfterValidator(_content), AfterValidator(_markdown)]
LinkURL = Annotated[str, AfterValidator(_content), AfterValidator(_link_url)]
HttpURL = Annotated[str, AfterValidator(_http_url)]
ImageSrc = Annotated[str, AfterValidator(_image_src)]
IssueDate = Annotated[dt.date, BeforeValidator(_date)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Image(_Strict):
    """An image beside a section's text. alt is required ("" marks it decorative)."""

    src: ImageSrc = Field(description="http(s) address of the image, or a path relative to the issue file "
                                      "(like images/photo.png): `newsletter publish` copies it into the site")
    alt: OneLine = Field(description='alternative text; "" for a decorative image')
    href: LinkURL | None = Field(None, description="where a click on the image goes")


class Link(_Strict):
    """Shown as '<label>: <text>', like 'Read the briefing: The impact of …'."""

    text: Required
    url: LinkURL
    label: OneLine | None = Field(None, description="e.g. 'Read the news story'")


class Section(_Strict):
    heading: Required
    body: Markdown = Field(description="Markdown (CommonMark); raw HTML is shown as text")
    image: Image | None = None
    links: list[Link] = Field(default_factory=list)


class Issue(_Strict):
    """One newsletter issue. Merge fields such as {{ name }} may appear in any text."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Newsletter issue")

    subject: Required
    preheader: OneLine | None = Field(None, description="the inbox preview line after the subject")
    date: IssueDate = Field(description="YYYY-MM-DD")
    title: OneLine | None = Field(None, description="defaults to the newsletter's name")
    intro: OptionalMarkdown | None = None
    sections: list[Section] = Field(min_length=1)
    draft: bool = Field(False, description="left out of `newsletter publish` unless --drafts")


def slug_of(path: Path) -> str:
    """An issue is identified by its file name without extension."""
    return path.stem


def json_schema() -> dict[str, Any]:
    schema = Issue.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
