"""newsletter.toml: the newsletter's settings, validated like issue files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, ValidationInfo, field_validator

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.mergefields import URL_FIELDS, fill_url_placeholders, url_placeholders
from newsletter_mailer.validators import (AsciiHttpURL, HeaderLine, HttpURL, OneLine, StrictModel, ascii_url,
                                          header_safe, http_url, link_url, no_merge_fields)
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


def _plain_link(v: str) -> str:
    return no_merge_fields(link_url(v), "an http(s) or mailto link")


Color = Annotated[str, AfterValidator(_color)]
Address = Annotated[str, AfterValidator(_address), AfterValidator(header_safe)]  # To, From, Reply-To …
PlainLink = Annotated[str, AfterValidator(_plain_link)]


class DarkBrand(StrictModel):
    """[brand.dark]: colours for readers in dark mode; each left out is derived from the light
    brand (see palette.py), so most newsletters set none of them."""

    background: Color | None = Field(None, description="the page around the column")
    surface: Color | None = Field(None, description="the column's cards")
    text: Color | None = None
    link: Color | None = None
    heading: Color | None = None
    primary: Color | None = Field(None, description="the header band and buttons (white text on it)")


class FooterLink(StrictModel):
    """[[footer_links]]: a link in every footer, like the website or a social profile."""

    label: OneLine
    url: PlainLink = Field(description="http(s) or mailto")


class Brand(StrictModel):
    primary_color: Color = "#4a2a7a"
    accent_color: Color = "#c0392b"
    background_color: Color = "#f2f0f5"
    text_color: Color = "#222222"
    link_color: Color = "#1a5fa8"
    logo_url: HttpURL | None = None
    logo_alt: OneLine | None = Field(None, validate_default=True)
    font_family: str = "Helvetica, Arial, sans-serif"
    dark: DarkBrand = DarkBrand()

    @field_validator("logo_alt", mode="after")
    @classmethod
    def _logo_alt(cls, v: str | None, info: ValidationInfo) -> str | None:
        """A logo is an image in the header: readers who do not load images need its words."""
        if info.data.get("logo_url") and not (v or "").strip():
            raise ValueError("is required when logo_url is set (the organisation's name, as the logo shows it)")
        return v

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
    ca_file: str | None = Field(
        None, description="PEM file of CA certificates to trust too (a private CA), relative to the current folder")
    allow_insecure_auth: bool = Field(
        False, description="allow the password in clear text (security none) to a host that is not this machine")
    connections: int = Field(1, ge=1, le=16, description="SMTP connections used at once (env SMTP_CONNECTIONS): "
                                                         "each carries its own messages, for a relay far away")


class Tracking(StrictModel):
    click: bool = False
    open: bool = False


class SendGridSettings(StrictModel):
    asm_group_id: int | None = Field(None, description="SendGrid unsubscribe group; its own unsubscribe link is then used")
    categories: list[OneLine] = Field(default_factory=list, max_length=9)
    tracking: Tracking = Tracking()
    timeout: float = 30.0


_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")


def _dns_name(v: str) -> str:
    if not (0 < len(v) <= 253 and all(_LABEL.match(p) for p in v.split("."))):
        raise ValueError(f"'{v}' is not a DNS name like example.org")
    return v.lower()


DnsName = Annotated[str, AfterValidator(_dns_name)]


class DkimSettings(StrictModel):
    """[delivery.dkim]: sign each SMTP/outbox message (dkim_signing.py); SendGrid signs for itself."""

    domain: DnsName = Field(description="the signing domain (d=): from_email's domain or its parent")
    selector: DnsName = Field(description="where the public key is: <selector>._domainkey.<domain>")
    key_file: str | None = Field(
        None, description="PEM private key (mode 0600), relative to the current folder; DKIM_PRIVATE_KEY wins")


class Delivery(StrictModel):
    provider: Literal["outbox", "smtp", "sendgrid"] = "outbox"
    rate: float | None = Field(None, allow_inf_nan=False,
                               description="messages per second (0.01 to 10000), all providers; 0: no limit")
    max_consecutive_failures: int = Field(10, ge=1)
    allow_local_domains: bool = Field(
        False, description="accept intranet addresses (user@localhost, .test, .internal, .local, "
                           "single-label) in the list, for a private relay")
    return_path: Address | None = Field(
        None, description="the envelope sender (SMTP MAIL FROM, the outbox's Return-Path): where bounces go; "
                          "default from_email. SendGrid uses its own")
    verp: bool = Field(False, description="return_path becomes bounces+<the reader's token>@its domain, so every "
                                          "bounce names its reader (`newsletter inbox`)")
    smtp: SmtpSettings = SmtpSettings()
    sendgrid: SendGridSettings = SendGridSettings()
    dkim: DkimSettings | None = None

    @field_validator("verp")
    @classmethod
    def _verp(cls, v: bool, info: ValidationInfo) -> bool:
        """The inbox reads the reader's token from bounces+<token>@: any other local part is never matched."""
        rp = info.data.get("return_path", "")  # "": return_path itself was refused (its own error)
        if v and rp is None:
            raise ValueError("needs a return_path: set return_path = \"bounces@your-domain\" in [delivery]")
        if v and rp and rp.rsplit("@", 1)[0].lower() != "bounces":
            raise ValueError(f"needs return_path's local part to be 'bounces' (not '{rp.rsplit('@', 1)[0]}'): "
                             "`newsletter inbox` reads the reader's token from bounces+<token>@ addresses")
        return v

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

    base_url: AsciiHttpURL | None = Field(None, description="the public address of the app, e.g. https://news.example.org")
    confirm_hours: int = Field(48, ge=1, le=720, description="how long a sign-up's confirmation link works")
    consent: OneLine = Field(
        "Yes, email me this newsletter. I can unsubscribe at any time with the link in every issue.",
        description="the consent line shown on the sign-up form")
    signup_per_hour_address: int = Field(3, ge=1, le=100, description="confirmation emails per address per hour")
    signup_per_hour_client: int = Field(20, ge=1, le=100_000,
                                        description="sign-ups per client network (IPv4 address, IPv6 /64) per hour")
    signup_per_hour_total: int = Field(200, ge=1, le=1_000_000,
                                       description="sign-ups per hour from everyone; then the form says try later")
    trusted_proxies: list[str] = Field(
        [], description="reverse proxies (addresses or networks) whose X-Forwarded-For names the client")
    previous_list_ids: list[HeaderLine] = Field(
        default_factory=list, max_length=20,
        description="list ids this list had before (`old.example.org`, or a whole old List-Id): links sealed "
                    "to them keep working")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"'{item[:60]}' is not an IP address or network such as 10.0.0.0/8") from None
        return v

    @property
    def base(self) -> str | None:
        return self.base_url.rstrip("/") if self.base_url else None


class ReaderTracking(StrictModel):
    """[tracking]: this project's own click counting through `newsletter serve` (privacy first: opt-in,
    aggregate counts; docs/privacy.md says what is kept and for how long)."""

    clicks: bool = Field(False, description="each link of an issue goes through <web.base_url>/c/… and is counted")
    opens: bool = Field(False, description="an open-tracking pixel too (privacy proxies such as Apple Mail inflate opens)")
    per_reader: bool = Field(False, description="keep who clicked which link (else only per-link totals)")
    keep_days: int = Field(30, ge=1, le=3650, description="days the keyed reader hashes that make counts unique are kept")
    ab_winner: Literal["clicks", "opens"] = Field(
        "clicks", description="what a subject test (send --ab-subject) compares: readers who clicked a link, or who "
                              "opened (needs opens here, or SendGrid's open tracking)")


class Bounces(StrictModel):
    """[bounces]: how `newsletter inbox` reads temporary failures (full mailbox, greylisting)."""

    soft_limit: int = Field(3, ge=1, le=100, description="temporary failures on different issues before "
                                                          "an address counts as bounced")


class ChecksSettings(StrictModel):
    """[checks]: how strict `check`, `compose` and `send` are."""

    warnings_as_errors: bool | list[Literal["size", "unsubscribe", "inbox", "contrast", "headings", "link-text",
                                            "alt-text", "all-caps", "image-only", "local-image",
                                            "placeholder", "return-path"]] = Field(
        False, description="true: every warning stops a send; or a list of check names to raise")


class State(StrictModel):
    """[state]: where the ledger and the audience store live (default: SQLite files in the state folder)."""

    database_url: str | None = Field(
        None, description="postgresql://user@host/database for a shared state (NEWSLETTER_DATABASE_URL wins); "
                          "the password only from PGPASSWORD or ~/.pgpass")

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        from newsletter_mailer.state.db import check_url

        return v if v is None else check_url(v, from_file=True)


class Settings(StrictModel):
    name: HeaderLine
    from_email: Address
    from_name: HeaderLine | None = None
    reply_to: Address | None = None
    web_base_url: AsciiHttpURL
    postal_address: OneLine = Field(description="shown in every footer, as bulk-mail law expects")
    test_recipient: Address | None = None
    language: str = "en"
    unsubscribe_url: str | None = Field(
        None, description="template with {{ email }} and {{ token }}, an HMAC keyed by NEWSLETTER_SECRET")
    unsubscribe_one_click: bool = Field(
        False, description="unsubscribe_url's page honours an RFC 8058 one-click POST: advertise it "
                           "(List-Unsubscribe-Post) when the link is https")
    unsubscribe_mailto: Address | None = None
    list_id: HeaderLine | None = None
    brand: Brand = Brand()
    delivery: Delivery = Delivery()
    web: Web = Web()
    state: State = State()
    timezone: str | None = Field(
        None, description="IANA zone for `send --at` times, e.g. Europe/London (default: this machine's zone)")
    footer_links: list[FooterLink] = Field(default_factory=list, max_length=12)
    bounces: Bounces = Bounces()
    checks: ChecksSettings = ChecksSettings()
    tracking: ReaderTracking = ReaderTracking()
    _file: Path | None = PrivateAttr(None)  # the newsletter.toml these came from (load_settings sets it)

    @property
    def file(self) -> Path | None:
        """Where these settings were read: errors about them name this file, not the issue."""
        return self._file

    @field_validator("language")
    @classmethod
    def _lang(cls, v: str) -> str:
        if not _LANG.match(v):
            raise ValueError(f"'{v}' is not a language tag like en-GB")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from newsletter_mailer.schedule import zone

            try:
                zone(v)
            except NewsletterError as exc:
                raise ValueError(exc.message) from None
        return v

    @field_validator("tracking")
    @classmethod
    def _tracking(cls, v: ReaderTracking, info: ValidationInfo) -> ReaderTracking:
        web = info.data.get("web")
        if (v.clicks or v.opens) and web is not None and web.base is None:
            raise ValueError("clicks and opens are counted by `newsletter serve`: set [web] base_url too")
        return v

    @field_validator("unsubscribe_url")
    @classmethod
    def _unsub(cls, v: str | None) -> str | None:
        """Parsed as message.unsubscribe_link fills it (List-Unsubscribe too): judged once filled."""
        if v is None:
            return v
        v = ascii_url(v)
        names = url_placeholders(v, URL_FIELDS)
        filled = http_url(fill_url_placeholders(v, email="reader@example.org", token="0" * 64))
        if not names:
            raise ValueError("must include {{ email }} or {{ token }} so each link is personal")
        header_safe(filled)
        return v

    @property
    def one_click(self) -> bool:
        """Whether List-Unsubscribe-Post may be advertised for an https link: only when something
        is known to honour the POST (this project's app, or a custom page that says it does)."""
        if self.unsubscribe_url is not None:
            return self.unsubscribe_one_click
        return self.web.base is not None

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


PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net")  # RFC 2606: never anyone's site


def placeholder_host(url: str | None) -> str | None:
    """The host of url when it is on an RFC 2606 example domain (as `init` writes them), else None."""
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "") if url else ""
    return host if any(host == d or host.endswith("." + d) for d in PLACEHOLDER_DOMAINS) else None


SETTINGS_FILE = "newsletter.toml"


def find_config(config: Path | None, near: Path | None = None) -> Path:
    """--config; else newsletter.toml in the current folder; else next to the issue file `near` or
    in a folder above it (as git finds .git): `newsletter check mynews/issues/x.yaml` works from
    the folder above mynews/. --verbose logs which file was found (--config names its own)."""
    if config is not None:
        if not config.exists():
            raise NewsletterError("settings file not found", path=config,
                                  hint="check the path, or run `newsletter init` to create one")
        return config
    here = Path(SETTINGS_FILE)
    if here.exists():
        return _used(here)
    if near is not None:
        start = near.absolute().parent
        for folder in (start, *start.parents):
            found = folder / SETTINGS_FILE
            if found.is_file():  # named as the user would type it: errors about it say this path
                try:
                    found = found.relative_to(Path.cwd())
                except ValueError:
                    pass
                return _used(found)
    where = f"in the current folder or next to {near} and the folders above it" if near is not None \
        else "in the current folder"
    raise NewsletterError(f"settings file not found {where}", path=here,
                          hint="pass --config PATH, or run `newsletter init` to create one")


def _used(path: Path) -> Path:
    import logging

    logging.getLogger(__name__).info("settings: %s", path)
    return path


def load_settings(config: Path | None, near: Path | None = None) -> tuple[Settings, Path]:
    """Settings and the folder they live in (user templates, state and outbox are found from it).
    `near` is the issue file the command works on, if any: see find_config."""
    path = find_config(config, near)
    settings = load_toml_model(path, Settings)
    settings._file = path
    return settings, path.resolve().parent


def settings_json_schema() -> dict:
    """newsletter.toml as JSON Schema: `newsletter schema --settings`, and the file `init` writes
    beside it so editors that read `#:schema` (Taplo, Even Better TOML) complete and check it."""
    schema = Settings.model_json_schema()
    schema["title"] = "newsletter.toml"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
