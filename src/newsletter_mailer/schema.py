"""The issue file (issues/*.yaml) as typed pydantic models; also exported as JSON Schema."""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from newsletter_mailer.conditions import For
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.markdown_html import check_markdown_links
from newsletter_mailer.validators import (HeaderLine, OneLine, StrictModel, content, header_safe, http_url, link_url,
                                          no_merge_fields, not_blank, single_line)

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SLUG_MAX = 100
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (SLUG_MAX - 1), re.ASCII)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _image_src(v: str) -> str:
    """An http(s) address, or a path relative to the issue file (images/photo.png), kept normalised."""
    v = v.strip()
    if not v:
        raise ValueError("must not be empty")
    if v.lower().startswith(("http://", "https://")):
        return http_url(v)
    if _SCHEME_RE.match(v) or v.startswith("//"):
        raise ValueError(f"'{v[:60]}' must be an http(s) address or a path relative to the issue file "
                         "(like images/photo.png)")
    if any(ord(c) < 32 or c == "\x7f" for c in v):
        raise ValueError("must not contain control characters")
    no_merge_fields(v, "a plain file path")
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


Required = Annotated[str, AfterValidator(not_blank), AfterValidator(single_line), AfterValidator(content)]
Subject = Annotated[str, AfterValidator(not_blank), AfterValidator(content), AfterValidator(header_safe)]
Markdown = Annotated[str, AfterValidator(not_blank), AfterValidator(content), AfterValidator(_markdown)]
OptionalMarkdown = Annotated[str, AfterValidator(content), AfterValidator(_markdown)]
LinkURL = Annotated[str, AfterValidator(content), AfterValidator(link_url)]
ImageSrc = Annotated[str, AfterValidator(_image_src)]
IssueDate = Annotated[dt.date, BeforeValidator(_date)]


class Image(StrictModel):
    """A section's image, or the issue's hero. alt is required ("" marks it decorative)."""

    src: ImageSrc = Field(description="http(s) address of the image, or a path relative to the issue file "
                                      "(like images/photo.png): `newsletter publish` copies it into the site")
    alt: OneLine = Field(description='alternative text; "" for a decorative image')
    href: LinkURL | None = Field(None, description="where a click on the image goes")


class Link(StrictModel):
    """Shown as '<label>: <text>', like 'Read the briefing: The impact of …'."""

    text: Required
    url: LinkURL
    label: OneLine | None = Field(None, description="e.g. 'Read the news story'")


class Button(StrictModel):
    """A call to action: a coloured, bulletproof button (its words show with images off too)."""

    label: Required = Field(description="what the reader does, e.g. 'Book a place'")
    url: LinkURL = Field(description="http(s) or mailto")


Layout = Literal["image-left", "image-right", "image-top", "text-only"]
IMAGE_LAYOUTS = ("image-left", "image-right", "image-top")


class Section(StrictModel):
    heading: Required
    body: Markdown = Field(description="Markdown (CommonMark); raw HTML is shown as text")
    image: Image | None = None
    links: list[Link] = Field(default_factory=list)
    layout: Layout | None = Field(
        None, validate_default=True,
        description="where the image goes: image-top (the default with an image: full column width, "
                    "best for long text), image-left or image-right (beside the text on a wide screen, "
                    "above it on a phone); text-only (the default without an image)")
    button: Button | None = Field(None, description="a call to action after the links")
    for_: For | None = Field(None, alias="for", description="who gets the section in their email (the "
                             "readers' tags or fields; default everyone): see the issue format's Audiences")
    web: bool = Field(True, description="false: left out of the web copy (which anyone can read)")

    @field_validator("layout", mode="after")
    @classmethod
    def _layout(cls, v: str | None, info: ValidationInfo) -> str:
        """Resolved here, so templates see one of the four; an image layout needs an image."""
        if "image" not in info.data:  # the image itself is invalid: that error is the one to show
            return v or "text-only"
        has_image = info.data["image"] is not None
        if v is None:
            return "image-top" if has_image else "text-only"
        if v in IMAGE_LAYOUTS and not has_image:
            raise ValueError(f"'{v}' needs an image: add one, or use text-only")
        if v == "text-only" and has_image:
            raise ValueError("text-only would hide the section's image: remove the image or choose "
                             "image-top, image-left or image-right")
        return v


class Issue(StrictModel):
    """One newsletter issue. Merge fields such as {{ name }} may appear in any text."""

    model_config = ConfigDict(title="Newsletter issue")  # merged with StrictModel's

    subject: Subject
    preheader: HeaderLine | None = Field(None, description="the inbox preview line after the subject")
    date: IssueDate = Field(description="YYYY-MM-DD")
    title: OneLine | None = Field(None, description="defaults to the newsletter's name")
    intro: OptionalMarkdown | None = None
    intro_for: For | None = Field(None, description="who gets the intro in their email (default everyone), "
                                                    "like a section's for:")
    sections: list[Section] = Field(min_length=1)
    draft: bool = Field(False, description="left out of `newsletter publish` unless --drafts")
    hero: Image | None = Field(None, description="a full-width image under the header")


def slug_of(path: Path) -> str:
    """An issue is identified by its file name without extension, checked here for every command.

    The slug names folders (build/<slug>/, outbox/<slug>/), the web address <web_base_url>/<slug>/,
    the ledger's rows and a mail header, so it must be safe in a path, a URL and a header.
    """
    slug = path.stem
    if not _SLUG_RE.fullmatch(slug) or ".." in slug:
        raise NewsletterError("the file name becomes the issue's folder and web address: it must start with "
                              "a letter or digit and hold only letters, digits, . - and _ (no '..'), "
                              f"up to {SLUG_MAX} characters",
                              path=path, hint="rename the file, e.g. issues/2024-05-news.yaml")
    return slug


def json_schema() -> dict[str, Any]:
    schema = Issue.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
