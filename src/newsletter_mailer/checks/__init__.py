"""Pre-flight checks on a composed issue: what would hurt delivery or readers.

Run by `compose` (shown), `check` (exit code) and `send` (errors stop the send). Delivery checks
live here; contrast_checks and reader_checks hold the accessibility ones. [checks]
warnings_as_errors in newsletter.toml raises warnings (all, or the named families) to errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from html import escape
from html.parser import HTMLParser

from newsletter_mailer import media
from newsletter_mailer.checks import reader as reader_checks
from newsletter_mailer.checks.result import Check
from newsletter_mailer.checks.variants import variant_checks
from newsletter_mailer.compose import UNSUBSCRIBE, Composed
from newsletter_mailer.checks.contrast import contrast_checks
from newsletter_mailer.mergefields import fill_url_placeholders, url_placeholders
from newsletter_mailer.sourcefile import field_path
from newsletter_mailer.settings import placeholder_host
from newsletter_mailer.variants import Audiences, Variant

GMAIL_CLIP = 102 * 1024
SIZE_WARN = 90 * 1024
SUBJECT_PREVIEW = 60
PREHEADER_PREVIEW = 100
_ABSOLUTE = ("http://", "https://", "mailto:")


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images_without_alt: list[str] = []
        self.images = 0
        self.hrefs: list[str] = []
        self.stylesheets: list[str] = []
        self.style = False
        self.imports = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images += 1
            if a.get("alt") is None:
                self.images_without_alt.append(a.get("src") or "?")
        elif tag == "a" and a.get("href") is not None:
            self.hrefs.append(a["href"] or "")
        elif tag == "link" and "stylesheet" in (a.get("rel") or "").lower():
            self.stylesheets.append(a.get("href") or "?")
        elif tag == "style":
            self.style = True

    def handle_endtag(self, tag):
        if tag == "style":
            self.style = False

    def handle_data(self, data):
        if self.style and "@import" in data:
            self.imports += 1


def run_checks(c: Composed, readers: Counter[Variant] | None = None, list_name: str | None = None, *,
               variants: bool = True) -> list[Check]:
    """readers: how many on list_name get each variant (compose/check --list); variants=False leaves
    the variant checks to the caller (a send checks the variants its list's readers get)."""
    subject, preheader, html, text = c.sample()
    out = _size_and_markup(html) + _unsubscribe_and_address(c, html, text) + _inbox(subject, preheader)
    out += _placeholder_addresses(c.settings) + _return_path_alignment(c.settings)
    out += contrast_checks(c.settings.brand) + reader_checks.heading_order_checks(html)
    out += (reader_checks.link_text_checks(c.issue) + reader_checks.alt_text_checks(c.issue)
            + reader_checks.section_checks(c.issue) + _local_images(c))
    if variants:
        out += variant_checks(Audiences(c.issue), readers, list_name)
    return _raised(out, c.settings.checks.warnings_as_errors)


def _raised(checks: list[Check], setting: bool | list[str]) -> list[Check]:
    """Warnings as errors: all of them (true) or those of the named families."""
    raise_all = setting is True
    names = set() if isinstance(setting, bool) else set(setting)
    return [replace(k, level="error") if k.level == "warning" and (raise_all or k.name in names) else k
            for k in checks]


def _size_and_markup(html: str) -> list[Check]:
    out: list[Check] = []
    size = len(html.encode("utf-8"))
    kb = f"{size / 1024:.1f} KB"
    if size > GMAIL_CLIP:
        out.append(Check("error", f"HTML is {kb}: Gmail clips messages over 102 KB; shorten the issue"))
    elif size > SIZE_WARN:
        out.append(Check("warning", f"HTML is {kb}: close to Gmail's 102 KB clipping limit", "size"))
    else:
        out.append(Check("ok", f"HTML size {kb} (Gmail clips at 102 KB)"))

    scan = _Scan()
    scan.feed(html)
    if scan.images_without_alt:
        out.append(Check("error", f"{len(scan.images_without_alt)} image(s) without alt text: "
                                  + ", ".join(scan.images_without_alt[:3])))
    else:
        out.append(Check("ok", "no images" if not scan.images else "the image has alt text"
                         if scan.images == 1 else "both images have alt text" if scan.images == 2
                         else f"all {scan.images} images have alt text"))
    relative = [h for h in scan.hrefs if not h.strip().lower().startswith(_ABSOLUTE)]
    if relative:
        out.append(Check("error", f"{len(relative)} link(s) not absolute: " + ", ".join(relative[:3])))
    else:
        out.append(Check("ok", f"all {len(scan.hrefs)} links are absolute"))
    if scan.stylesheets or scan.imports:
        out.append(Check("error", "remote stylesheet (<link rel=stylesheet> or @import): mail clients ignore it"))
    else:
        out.append(Check("ok", "no remote stylesheets"))
    return out


def _unsubscribe_and_address(c: Composed, html: str, text: str) -> list[Check]:
    out: list[Check] = []
    unsub_field = next((i for i, f in enumerate(c.fields) if f.name == UNSUBSCRIBE), None)
    unsub_in_html = unsub_field is not None and unsub_field in c.html.used
    has_source = bool(c.settings.unsubscribe_url or c.settings.web.base_url
                      or c.settings.delivery.sendgrid.asm_group_id)
    if not unsub_in_html:
        out.append(Check("error", "no unsubscribe link in the email: the template must use {{ unsubscribe_url }}"))
    elif not has_source:
        out.append(Check("error", "no unsubscribe address: set [web] base_url in newsletter.toml "
                                  "(or unsubscribe_url, or delivery.sendgrid.asm_group_id)", in_settings=True))
    elif c.settings.unsubscribe_url:
        # Filled by the parser each message's link is filled with: what is shown is what is sent.
        sample = fill_url_placeholders(c.settings.unsubscribe_url, email="reader@example.org", token="TOKEN")
        out.append(Check("ok", f"unsubscribe link present, e.g. {sample}"))
    else:
        out.append(Check("ok", "unsubscribe link present"))
    if c.settings.unsubscribe_url and "email" in url_placeholders(c.settings.unsubscribe_url):
        out.append(Check("warning", "unsubscribe_url shows the address ({{ email }}): the address in the "
                                    "link costs spam score and leaks into logs: use [web] base_url", "unsubscribe",
                         in_settings=True))
    # The text part wraps the address at 72 like every line, so compare it word by word.
    if escape(c.settings.postal_address) not in html or " ".join(c.settings.postal_address.split()) not in " ".join(text.split()):
        out.append(Check("error", "postal address missing from the email (bulk-mail law expects it)"))
    else:
        out.append(Check("ok", "postal address present"))
    return out


def _inbox(subject: str, preheader: str) -> list[Check]:
    out: list[Check] = []
    if len(subject) > SUBJECT_PREVIEW:
        out.append(Check("warning", f"subject is {len(subject)} characters: inboxes show about {SUBJECT_PREVIEW}",
                         "inbox", field="subject"))
    else:
        out.append(Check("ok", f"subject length {len(subject)}"))
    if not preheader:
        out.append(Check("warning", "no preheader: inboxes will preview the first text of the email instead",
                         "inbox", field="preheader"))
    elif len(preheader) > PREHEADER_PREVIEW:
        out.append(Check("warning", f"preheader is {len(preheader)} characters: inboxes show about {PREHEADER_PREVIEW}",
                         "inbox", field="preheader"))
    else:
        out.append(Check("ok", f"preheader length {len(preheader)}"))
    return out + reader_checks.preheader_repeat_check(subject, preheader)


def _local_images(c: Composed) -> list[Check]:
    """The preview shows a local image from its file, but readers load it from the site: say where,
    so nobody sends before publishing."""
    out = []
    for loc, rel in media.local_images(c.issue):
        section = loc[1] + 1 if loc[0] == "sections" else None
        out.append(Check("warning", f"{field_path(loc)}: local image: readers see it only after `newsletter "
                                    f"publish` has put it at {media.image_url(c.settings, c.slug, rel)}",
                         "local-image", section, field_path(loc)))
    return out


def _placeholder_addresses(settings) -> list[Check]:
    """Web addresses still on the RFC 2606 example domains `init` writes: every "view in browser"
    (and unsubscribe) link made from them leads nowhere."""
    out = []
    for name, url in (("web_base_url", settings.web_base_url), ("web.base_url", settings.web.base_url)):
        host = placeholder_host(url)
        if host:
            out.append(Check("warning", f"{name} is on {host}, a placeholder domain: its links lead nowhere; "
                                        "set your newsletter's real address in newsletter.toml", "placeholder",
                             field=name, in_settings=True))
    return out


def _return_path_alignment(settings) -> list[Check]:
    """DMARC passes on SPF only when the envelope sender's domain aligns with From's; DMARC's default
    (relaxed) alignment accepts a subdomain either way, so only an unrelated domain is warned about."""
    rp = settings.delivery.return_path
    if rp is None:
        return []
    ours, theirs = rp.rsplit("@", 1)[1].lower(), settings.from_email.rsplit("@", 1)[1].lower()
    if ours == theirs or ours.endswith("." + theirs) or theirs.endswith("." + ours):
        return []
    return [Check("warning", f"delivery.return_path is on {ours}, from_email on {theirs}: SPF will not align "
                             f"for DMARC, so DKIM must sign as {theirs}; or use a return path on {theirs} "
                             f"(e.g. bounces@{theirs})", "return-path", field="delivery.return_path")]


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.level == "error"]


def summary(checks: list[Check]) -> str:
    """One line for the --watch terminal, naming what needs a look ("checks ok" only when nothing
    does): each failed check and warning by its name, e.g. "1 check failed (contrast); 2 warnings
    (placeholder, return-path)"."""
    def named(level: str, one: str, many: str) -> str | None:
        found = [c for c in checks if c.level == level]
        if not found:
            return None
        names = ", ".join(dict.fromkeys(c.name or c.field or "check" for c in found))
        return f"{len(found)} {one if len(found) == 1 else many} ({names})"

    parts = [p for p in (named("error", "check failed", "checks failed"), named("warning", "warning", "warnings")) if p]
    return "; ".join(parts) or "checks ok"
