"""`newsletter cancel`: stop a scheduled send SendGrid still holds, and say what already went.

Each batch of the issue whose time is still ahead is cancelled at SendGrid first and only
then marked 'cancelled' in the ledger (a refused cancel leaves the rows 'scheduled', which is
what SendGrid will do). A batch whose time has passed was delivered: its rows stay as they
are and the report names it. `send` afterwards refuses those rows unless --resend-cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from newsletter_mailer.providers.sendgrid import Api
from newsletter_mailer.send import Options, ledger_of


@dataclass
class CancelReport:
    slug: str
    zone: str | None                                             # the settings' timezone, for showing times
    cancelled: list[tuple[int, int, str | None]] = field(default_factory=list)  # (send_at, recipients, zone)
    went: list[tuple[int, int, str | None]] = field(default_factory=list)  # time passed: SendGrid delivered them


def cancel_scheduled(options: Options, api: Api | None = None) -> CancelReport:
    """Cancel every batch of the issue still ahead; api replaces SendGrid in tests."""
    settings, slug, state = ledger_of(options)
    report = CancelReport(slug, settings.timezone)
    ledger = state.ledger(create=False)
    if ledger is None:
        return report
    now = options.now().timestamp()
    try:
        for batch_id, send_at, count, zone in ledger.schedules(slug):
            if not count:
                continue
            if send_at <= now:
                report.went.append((send_at, count, zone or report.zone))
                continue
            if api is None:
                api = Api.from_env(options.env, float(settings.delivery.sendgrid.timeout))
            api.cancel(batch_id)
            report.cancelled.append((send_at, ledger.cancel(slug, batch_id), zone or report.zone))
    finally:
        ledger.close()
    return report
