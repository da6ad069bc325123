"""`newsletter doctor`: will the mail land? The sending domain against Gmail's and Yahoo's rules.

Each check is one `checks.result.Check` (ok, warning, error printed as "failure"), its message
ending in the fix; DNS is read by dnspython (lookup.py), SPF evaluated by pyspf (sender_policy.py),
DKIM tags by dkimpy, the organisational domain by the public suffix list (records.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from newsletter_mailer.checks.result import Check

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.doctor.lookup import Lookup
    from newsletter_mailer.settings import Settings
    from newsletter_mailer.state.handle import State


def envelope_domain(settings: Settings) -> str:
    """Where SPF is checked and bounces go: the return path's domain, else from_email's."""
    return (settings.delivery.return_path or settings.from_email).rsplit("@", 1)[1].lower()


def diagnose(settings: Settings, lookup: Lookup, env: Mapping[str, str], state: State | None,
             provider: str | None = None, *, online: bool = False) -> list[Check]:
    """Every check, in the order to fix them: SPF, DKIM, DMARC, bounces, unsubscribe, then the table."""
    from newsletter_mailer.doctor.bulk import Complaints, recent_complaints, table
    from newsletter_mailer.doctor.records import check_bounces, check_dkim, check_dmarc, check_unsubscribe
    from newsletter_mailer.doctor.sender_policy import check_spf

    provider = provider or settings.delivery.provider
    domain = envelope_domain(settings)
    if provider == "sendgrid":
        domain = settings.from_email.rsplit("@", 1)[1].lower()  # SendGrid's return path is its own subdomain
    out = check_spf(lookup, domain, provider, settings.delivery.smtp.host or None)
    out.append(check_dkim(lookup, settings, provider, env))
    out += check_dmarc(lookup, settings, provider, domain)
    if provider != "sendgrid":
        out.append(check_bounces(lookup, domain))
    out.append(check_unsubscribe(settings, provider))
    if online and state is not None and not (provider == "sendgrid" and settings.delivery.sendgrid.asm_group_id):
        from newsletter_mailer.doctor.records import check_unsubscribe_online

        out.append(check_unsubscribe_online(settings, state, env))
    return out + table(out, recent_complaints(state) if state is not None else Complaints((), 0, 0))
