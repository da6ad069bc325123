"""DKIM keys, the DMARC record and its alignment, the bounce domain's MX, the unsubscribe address."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from newsletter_mailer.checks.result import Check
from newsletter_mailer.doctor.lookup import Lookup, LookupProblem
from newsletter_mailer.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter_mailer.state.handle import State  # pragma: no cover
    from newsletter_mailer.settings import Settings

SENDGRID_SELECTORS = ("s1", "s2")
POLICIES = ("none", "quarantine", "reject")


def _tags(record: str) -> dict[str, str]:
    """A DKIM or DMARC tag=value list (RFC 6376 3.2), read by dkimpy; {} when it does not parse."""
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        return {k.decode().lower(): v.decode().strip() for k, v in parse_tag_value(record.encode()).items()}
    except (InvalidTagValueList, UnicodeDecodeError):
        return {}


def dkim_domain(settings: Settings, provider: str) -> str | None:
    """The d= receivers will see: ours, SendGrid's (the From domain once authenticated), or unknown."""
    if provider == "sendgrid":
        return settings.from_email.rsplit("@", 1)[1].lower()
    dkim = settings.delivery.dkim
    return dkim.domain if dkim is not None else None


def check_dkim(lookup: Lookup, settings: Settings, provider: str, env: Mapping[str, str]) -> Check:
    from_domain = settings.from_email.rsplit("@", 1)[1].lower()
    dkim = settings.delivery.dkim
    try:
        if provider == "sendgrid":
            missing = [s for s in SENDGRID_SELECTORS if not _key_records(lookup, f"{s}._domainkey.{from_domain}")]
            if missing:
                return Check("error", f"SendGrid's DKIM keys are not published at {', '.join(m + '._domainkey.' + from_domain for m in missing)}: "
                                      "authenticate the domain in SendGrid (Settings, Sender Authentication) and publish its CNAMEs",
                             "dkim-key")
            return Check("ok", f"SendGrid's DKIM keys are published at s1/s2._domainkey.{from_domain}", "dkim-key")
        if dkim is None:
            return Check("warning", f"messages are not signed here: the SMTP relay must DKIM-sign them with d={from_domain} "
                                    "(ask your mail provider), or set [delivery.dkim] (newsletter dkim keygen)", "dkim-key")
        name = f"{dkim.selector}._domainkey.{dkim.domain}"
        published = _key_records(lookup, name)
    except LookupProblem as exc:
        return Check("error", f"cannot read the DKIM key: {exc} (check the network or --nameserver)", "dkim-key")
    from newsletter_mailer.dkim_signing import load_key, txt_chunks

    try:
        key = load_key(dkim, env)
    except NewsletterError as exc:
        return Check("error", f"the DKIM private key cannot be used: {exc.format()}", "dkim-key")
    if not published:
        return Check("error", f"no DKIM key is published at {name}: publish TXT {txt_chunks(key.record())}", "dkim-key")
    if not any("".join(t.get("p", "").split()) == key.public and t.get("k", "rsa") == key.kind for t in published):
        return Check("error", f"the key published at {name} is not the private key's (messages would fail DKIM): "
                              f"publish TXT {txt_chunks(key.record())}", "dkim-key")
    return Check("ok", f"the {key.kind} key at {name} matches the private key", "dkim-key")


def _key_records(lookup: Lookup, name: str) -> list[dict[str, str]]:
    """The DKIM key records at name (a CNAME followed, as SendGrid publishes them)."""
    return [t for t in map(_tags, lookup.txt(name)) if t.get("p")]


def check_dmarc(lookup: Lookup, settings: Settings, provider: str, envelope_domain: str) -> list[Check]:
    from publicsuffixlist import PublicSuffixList

    from_domain = settings.from_email.rsplit("@", 1)[1].lower()
    psl = PublicSuffixList()
    org = psl.privatesuffix(from_domain) or from_domain
    try:
        where = f"_dmarc.{from_domain}"
        records = [t for t in lookup.txt(where) if t.lower().replace(" ", "").startswith("v=dmarc1")]
        if not records and org != from_domain:  # RFC 7489 6.6.3: the organisational domain's record applies
            where = f"_dmarc.{org}"
            records = [t for t in lookup.txt(where) if t.lower().replace(" ", "").startswith("v=dmarc1")]
    except LookupProblem as exc:
        return [Check("error", f"cannot read the DMARC record: {exc} (check the network or --nameserver)", "dmarc-record")]
    if not records:
        return [Check("error", f"no DMARC record at _dmarc.{from_domain}: publish TXT \"v=DMARC1; p=none; "
                               f"rua=mailto:dmarc@{from_domain}\" (Gmail and Yahoo require one)", "dmarc-record")]
    if len(records) > 1:
        return [Check("error", f"{where} has {len(records)} DMARC records (receivers then ignore DMARC): keep one",
                      "dmarc-record")]
    tags = _tags(records[0])
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        return [Check("error", f"the DMARC record at {where} has no valid policy (p={policy or 'missing'}): "
                               "start with p=none, then quarantine or reject", "dmarc-record")]
    out = [Check("ok", f"DMARC at {where}: p={policy}" + (" (monitoring only)" if policy == "none" else ""),
                 "dmarc-record")]

    def aligned(domain: str | None, mode: str) -> bool:
        if not domain:
            return False
        domain = domain.lower()
        if mode == "s":
            return domain == from_domain
        return (psl.privatesuffix(domain) or domain) == org

    spf_mode, dkim_mode = tags.get("aspf", "r").lower(), tags.get("adkim", "r").lower()
    d = dkim_domain(settings, provider)
    spf_ok, dkim_ok = aligned(envelope_domain, spf_mode), aligned(d, dkim_mode)
    if spf_ok or dkim_ok:
        via = " and ".join(w for w, ok in ((f"SPF ({envelope_domain})", spf_ok), (f"DKIM (d={d})", dkim_ok)) if ok)
        out.append(Check("ok", f"the From domain {from_domain} aligns with {via}", "dmarc-alignment"))
    else:
        modes = {"s": "strict", "r": "relaxed"}
        out.append(Check("error", f"the From domain {from_domain} aligns with neither SPF ({envelope_domain}, "
                                  f"{modes.get(spf_mode, spf_mode)}) nor DKIM (d={d or 'none'}, {modes.get(dkim_mode, dkim_mode)}): "
                                  f"send with a return_path and a DKIM domain in {from_domain}", "dmarc-alignment"))
    return out


def check_bounces(lookup: Lookup, envelope_domain: str) -> Check:
    try:
        mx = [r for r in lookup.records(envelope_domain, "MX") if str(r.exchange) != "."]
        if mx:
            hosts = ", ".join(sorted(str(r.exchange).rstrip(".") for r in mx))
            return Check("ok", f"bounces to {envelope_domain} can come back (MX {hosts})", "bounces")
        if lookup.addresses(envelope_domain):
            return Check("ok", f"bounces to {envelope_domain} can come back (no MX; its A record)", "bounces")
    except LookupProblem as exc:
        return Check("error", f"cannot read the MX of {envelope_domain}: {exc}", "bounces")
    return Check("error", f"bounces cannot come back: {envelope_domain} has no MX (or A) record: publish an MX "
                          "for the mailbox that receives them", "bounces")


def check_unsubscribe(settings: Settings, provider: str) -> Check:
    if provider == "sendgrid" and settings.delivery.sendgrid.asm_group_id is not None:
        return Check("ok", "one-click unsubscribe by SendGrid's unsubscribe group", "unsubscribe")
    url = settings.unsubscribe_url or settings.web.base_url
    setting = "unsubscribe_url" if settings.unsubscribe_url else "[web] base_url"
    if not url:
        return Check("error", "no one-click unsubscribe: set [web] base_url to where `newsletter serve` answers "
                              "over https", "unsubscribe")
    if not url.lower().startswith("https://"):
        return Check("error", f"{setting} {url} is not https: one-click unsubscribe needs https; serve it behind TLS "
                              "and give its https address", "unsubscribe")
    if not settings.one_click:
        return Check("error", f"{setting} does not take the one-click POST: use [web] base_url (newsletter serve), "
                              "or set unsubscribe_one_click = true if your page honours RFC 8058", "unsubscribe")
    return Check("ok", f"one-click unsubscribe (RFC 8058) at {url}", "unsubscribe")


def check_unsubscribe_online(settings: Settings, state: State, env: Mapping[str, str],
                             timeout: float = 10.0) -> Check:
    """`--online`: a one-click POST, as Gmail's would be, of a token sealed to a probe address the
    app answers and records nothing for: the endpoint must answer 200."""
    import urllib.error
    import urllib.request

    from newsletter_mailer import tokens

    if settings.web.base is None or settings.unsubscribe_url is not None:
        return Check("warning", "one-click not tried online: only the app's links ([web] base_url) can be",
                     "unsubscribe-online")
    secrets, _ = state.secrets(env, create=False)
    token = tokens.make_unsubscribe(secrets[0], state.list_ids(settings, check=False, record=False)[0],
                                    tokens.PROBE)
    url = f"{settings.web.base}/u/{token}"
    request = urllib.request.Request(url, data=b"List-Unsubscribe=One-Click", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    where = f"{settings.web.base}/u/…"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - https or http, ours
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check("error", f"one-click POST to {where} failed: {reason}: start `newsletter serve` behind "
                              "your TLS proxy at [web] base_url", "unsubscribe-online")
    if status == 200:
        return Check("ok", f"one-click POST to {where} answered 200 (a test: no reader changed)",
                     "unsubscribe-online")
    hint = ("the server has another secret: give it this NEWSLETTER_SECRET" if status == 404 else
            "check the proxy in front of newsletter serve")
    return Check("error", f"one-click POST to {where} answered {status}, not 200: {hint}", "unsubscribe-online")

