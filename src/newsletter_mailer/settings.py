"""newsletter.toml: the newsletter's settings, validated like issue files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.validators import HttpURL, OneLine, StrictModel, http_url
from newsletter_mailer.sourcefile import load_toml_model

_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_FONT = re.compile(r"^[A-Za-z0-9 ,'\"-]+$")
_LANG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")


def _color(v: str) -> str:
    if not _COLOR.match(v):
        raise ValueError(f"'{v}' is not a colour like #1a2b3c")
    return v


def _address(v: str) -> str:
    from newsletter_mailer.addresses import normalise

    return normalise(v)


Color = Annotated[str, AfterValidator(_color)]
Address = Annotated[str, AfterValidator(_address)]


class Brand(StrictModel):
    primary_color: Color = "#4a2a7a"
    accent_color: Color = "#c0392b"
    background_color: Color = "#f2f0f5"
    text_color: Color = "#222222"
    link_color: Color = "#1a5fa8"
    logo_url: HttpURL | None = None
    logo_alt: OneLine | None = None
    font_family: str = "Helvetica, Arial, sans-serif"

    @field_validator("font_family")
    @classmethod
    def _font(cls, v: str) -> str:
        if not _FONT.match(v):
            raise ValueError("may hold only letters, digits, spaces, commas, quotes and hyphens")
        return v


class SmtpSettings(StrictModel):
    host: str | None = None
    port: int | None = None
    username: str | None = None
    security: Literal["none", "starttls", "ssl"] | None = None
    timeout: float = 30.0


class Tracking(StrictModel):
    click: bool = False
    open: bool = False


class SendGridSettings(StrictModel):
    asm_group_id: int | None = Field(None, description="SendGrid unsubscribe group; its own unsubscribe link is then used")
    categories: list[OneLine] = Field(default_factory=list, max_length=9)
    tracking: Tracking = Tracking()
    timeout: float = 30.0


class Delivery(StrictModel):
    provider: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    rate: float | None = Field(None, allow_inf_nan=False,
                               description="messages per second (0.01 to 10000), all providers; 0: no limit")
    max_consecutive_failures: int = Field(10, ge=1)
    allow_local_domains: bool = Field(
        False, description="accept intranet addresses (user@localhost, .test, .internal, .local, "
                           "single-label) in the list, for a private relay")
    smtp: SmtpSettings = SmtpSettings()
    sendgrid: SendGridSettings = SendGridSettings()

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: float | None) -> float | None:
        """send sleeps attempted/rate seconds: 1e-300 would sleep past the clock, inf not at all."""
        if not v:
            return None
        if not 0.01 <= v <= 10000:
            raise ValueError(f"{v:g} is out of range: use 0.01 to 10000 messages per second, or 0 for no limit")
        return v


class Web(StrictModel):
    """[web]: the reader-facing app (`newsletter serve`): unsubscribe links and double opt-in sign-up."""

    base_url: HttpURL | None = Field(None, description="the public address of the app, e.g. https://news.example.org")
    confirm_hours: int = Field(48, ge=1, le=720, description="how long a sign-up's confirmation link works")
    consent: OneLine = Field(
        "Yes, email me this newsletter. I can unsubscribe at any time with the link in every issue.",
        description="the consent line shown on the sign-up form")
    signup_per_hour_address: int = Field(3, ge=1, le=100, description="confirmation emails per address per hour")
    signup_per_hour_client: int = Field(20, ge=1, le=100_000, description="sign-ups per client (IP) per hour")

    @property
    def base(self) -> str | None:
        return self.base_url.rstrip("/") if self.base_url else None


class Bounces(StrictModel):
    """[bounces]: how `newsletter inbox` reads temporary failures (full mailbox, greylisting)."""

    soft_limit: int = Field(3, ge=1, le=100, description="temporary failures on different issues before "
                                                          "an address counts as bounced")


class Settings(StrictModel):
    name: OneLine
    from_email: Address
    from_name: OneLine | None = None
    reply_to: Address | None = None
    web_base_url: HttpURL
    postal_address: OneLine = Field(description="shown in every footer, as bulk-mail law expects")
    test_recipient: Address | None = None
    language: str = "en"
    unsubscribe_url: str | None = Field(
        None, description="template with {{ email }} and {{ token }}, an HMAC keyed by NEWSLETTER_SECRET")
    unsubscribe_mailto: Address | None = None
    list_id: OneLine | None = None
    brand: Brand = Brand()
    delivery: Delivery = Delivery()
    web: Web = Web()
    bounces: Bounces = Bounces()

    @field_validator("language")
    @classmethod
    def _lang(cls, v: str) -> str:
        if not _LANG.match(v):
            raise ValueError(f"'{v}' is not a language tag like en-GB")
        return v

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsub(cls, v: str | None) -> str | None:
        if v is None:
            return v
        rest = re.sub(r"\{\{\s*(email|token)\s*\}\}", "", v)
        if "{" in rest or "}" in rest:
            raise ValueError("may use only {{ email }} and {{ token }}")
        http_url(rest)
        if not re.search(r"\{\{\s*(email|token)\s*\}\}", v):
            raise ValueError("must include {{ email }} or {{ token }} so each link is personal")
        return v

    @property
    def web_base(self) -> str:
        return self.web_base_url.rstrip("/")

    def web_url(self, slug: str) -> str:
        return f"{self.web_base}/{slug}/"

    @property
    def list_id_header(self) -> str:
        if self.list_id:
            return self.list_id
        domain = self.from_email.rsplit("@", 1)[1]
        label = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "newsletter"
        return f"{self.name} <{label}.{domain}>"


def find_config(config: Path | None) -> Path:
    path = config if config is not None else Path("newsletter.toml")
    if not path.exists():
        hint = "pass --config PATH" if config is None else "check the path"
        raise NewsletterError("settings file not found", path=path,
                              hint=f"{hint}, or run `newsletter init` to create one")
    return path


def load_settings(config: Path | None) -> tuple[Settings, Path]:
    """Settings and the folder they live in (user templates, state and outbox are found from it)."""
    path = find_config(config)
    return load_toml_model(path, Settings), path.resolve().parent
