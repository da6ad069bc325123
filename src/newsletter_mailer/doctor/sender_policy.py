"""SPF of the envelope domain, evaluated by pyspf (the reference implementation, RFC 7208).

One record, that parses, within the 10 DNS look-ups, not `+all`, and passing for the way this
newsletter sends: the SMTP host's addresses, or SendGrid's include.
"""

from __future__ import annotations

import ipaddress

from newsletter_mailer.checks.result import Check
from newsletter_mailer.doctor.lookup import Lookup, LookupProblem

PROBE = "192.0.2.1"  # TEST-NET-1: authorised by no real record, so the whole record is evaluated
SENDGRID_INCLUDE = "include:sendgrid.net"


def spf_records(lookup: Lookup, domain: str) -> list[str]:
    return [t for t in lookup.txt(domain) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def evaluate(lookup: Lookup, domain: str, ip: str) -> tuple[str, str, int]:
    """(result, explanation, DNS look-ups) of `ip` sending for `domain`, as a receiver finds it."""
    import spf

    with lookup.as_default():
        q = spf.query(i=ip, s=f"postmaster@{domain}", h=domain, timeout=5, querytime=20)
        result, _code, explanation = q.check()
    return result, explanation, q.lookups


def check_spf(lookup: Lookup, domain: str, provider: str, smtp_host: str | None) -> list[Check]:
    try:
        return _check(lookup, domain, provider, smtp_host)
    except LookupProblem as exc:
        return [Check("error", f"cannot read the SPF of {domain}: {exc} (check the network or --nameserver)",
                      "spf-record")]


def _check(lookup: Lookup, domain: str, provider: str, smtp_host: str | None) -> list[Check]:
    records = spf_records(lookup, domain)
    example = f'"v=spf1 {SENDGRID_INCLUDE if provider == "sendgrid" else "a:" + (smtp_host or "your-mail-server")} -all"'
    if not records:
        return [Check("error", f"{domain} has no SPF record: publish a TXT record {example} at {domain}", "spf-record")]
    if len(records) > 1:
        return [Check("error", f"{domain} has {len(records)} SPF records (receivers then ignore SPF): "
                               "merge them into one TXT record", "spf-record")]
    record = records[0]
    out = [Check("ok", f"{domain} has one SPF record: {record}", "spf-record")]
    terms = record.lower().split()[1:]
    if any(t in ("all", "+all") for t in terms):
        out.append(Check("error", f"the SPF of {domain} ends in +all (anyone may send as you): end it with -all or ~all",
                         "spf-all"))
    result, explanation, lookups = evaluate(lookup, domain, PROBE)
    if result == "permerror" and "lookups" in explanation.lower():
        out.append(Check("error", f"the SPF of {domain} needs more than 10 DNS look-ups (receivers answer permerror): "
                                  "replace include:/a:/mx: terms by ip4:/ip6: ranges", "spf-lookups"))
        return out
    if result == "permerror":
        out.append(Check("error", f"the SPF of {domain} does not parse ({explanation}): fix the record's syntax",
                         "spf-parse"))
        return out
    out.append(Check("ok", f"the SPF of {domain} parses with {lookups} of 10 DNS look-ups", "spf-lookups"))
    out.append(_sender(lookup, domain, provider, smtp_host, terms))
    return out


def _sender(lookup: Lookup, domain: str, provider: str, smtp_host: str | None, terms: list[str]) -> Check:
    if provider == "sendgrid":
        if SENDGRID_INCLUDE in terms or "+" + SENDGRID_INCLUDE in terms:
            return Check("ok", f"the SPF of {domain} includes SendGrid", "spf-sender")
        return Check("error", f"the SPF of {domain} does not include SendGrid: add {SENDGRID_INCLUDE} before the all",
                     "spf-sender")
    if provider != "smtp" or not smtp_host:
        return Check("warning", f"no SMTP host to check against the SPF of {domain} (provider {provider}): "
                                "run the doctor with the settings you send with", "spf-sender")
    try:
        ips = [str(ipaddress.ip_address(smtp_host))]
    except ValueError:
        ips = lookup.addresses(smtp_host)
    if not ips:
        return Check("error", f"the SMTP host {smtp_host} has no address in DNS: check [delivery.smtp] host",
                     "spf-sender")
    refused = [ip for ip in ips if evaluate(lookup, domain, ip)[0] != "pass"]
    if refused:
        return Check("error", f"the SPF of {domain} does not authorise the SMTP host {smtp_host} "
                              f"({', '.join(refused)}): add a:{smtp_host} or ip4:/ip6: for it", "spf-sender")
    return Check("ok", f"the SPF of {domain} authorises the SMTP host {smtp_host} ({', '.join(ips)})", "spf-sender")
