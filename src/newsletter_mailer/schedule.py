"""`send --at`: when a scheduled send should land, read once and checked before anything is sent.

Editors write a wall-clock time ("2026-12-07 09:00") in their own zone; SendGrid wants Unix
seconds. The zone is --tz, else the settings' `timezone`, else the machine's; a time with an
offset keeps it. A time that does not exist in the zone (the hour skipped when the clocks go
forward), one in the past and one further ahead than the provider can hold mail are refused:
a wrong guess here would deliver at an hour nobody chose.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter_mailer.errors import NewsletterError

TIME_HINT = 'write e.g. "2026-12-07 09:00" or 2026-12-07T09:00+01:00'


def zone(name: str) -> ZoneInfo:
    """A named IANA zone, or a NewsletterError saying it is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise NewsletterError(f"unknown time zone '{name}'", field="--tz",
                              hint="use an IANA name such as Europe/London or America/New_York") from None


@dataclass(frozen=True)
class When:
    """The chosen moment, and the zone it was written in (for showing it back)."""

    at: datetime          # aware
    zone_name: str

    @property
    def iana(self) -> str | None:
        """The zone's IANA name when it has one (not for a bare offset or the machine's zone)."""
        return self.at.tzinfo.key if isinstance(self.at.tzinfo, ZoneInfo) else None

    @property
    def unix(self) -> int:
        return int(self.at.timestamp())

    def describe(self) -> str:
        """The time in the user's zone and in UTC: what the editor checks before confirming."""
        utc = self.at.astimezone(timezone.utc)
        return f"{self.at:%a %d %b %Y %H:%M} {self.at.tzname()} ({self.zone_name}) = {utc:%Y-%m-%d %H:%M} UTC"


def shown(unix: int, zone_name: str | None) -> str:
    """A recorded send_at as describe() shows it: in zone_name (else this machine's zone) and UTC."""
    if zone_name:
        return When(datetime.fromtimestamp(unix, zone(zone_name)), zone_name).describe()
    at = datetime.fromtimestamp(unix).astimezone()
    return When(at, f"this machine's zone, {at.tzname()}").describe()


def parse_at(text: str, tz: str | None, default_tz: str | None, now: datetime) -> When:
    """--at TEXT in --tz (else default_tz, else the machine's zone), checked to lie ahead of now."""
    try:
        naive_or_aware = datetime.fromisoformat(text.strip())
    except ValueError:
        raise NewsletterError(f"cannot read the time '{text}'", field="--at", hint=TIME_HINT) from None
    try:  # year 1 or 9999 in a far zone is past what datetime holds: one line, not a crash
        when = _in_zone(naive_or_aware, tz or default_tz, text)
        when.describe(), when.unix, when.at.astimezone()  # every form shown or sent later exists
    except (OverflowError, ValueError, OSError):
        raise NewsletterError(f"'{text}' is too far from today to schedule", field="--at",
                              hint=TIME_HINT + ", within the next 72 hours") from None
    if when.at <= now:
        raise NewsletterError(f"{when.describe()} is in the past", field="--at", hint="choose a later time")
    return when


def _in_zone(naive_or_aware: datetime, name: str | None, text: str) -> When:
    """The time in the zone it was written in: its own offset, else `name`, else the machine's."""
    if naive_or_aware.tzinfo is not None:
        at = naive_or_aware.astimezone(zone(name)) if name else naive_or_aware
        return When(at, name or f"UTC{naive_or_aware:%z}")
    if name:
        return When(_existing(naive_or_aware, zone(name), text), name)
    at = naive_or_aware.astimezone()  # the machine's zone, with the offset in force on that date
    return When(at, f"this machine's zone, {at.tzname()}")


def _existing(naive: datetime, tz: tzinfo, text: str) -> datetime:
    """naive as a time in tz; refused when the clocks skip it (it would silently move by an hour)."""
    at = naive.replace(tzinfo=tz)
    back = at.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None)
    if back != naive:
        raise NewsletterError(f"'{text}' does not exist in {tz}: the clocks go forward then",
                              field="--at", hint="choose a time outside the skipped hour")
    return at


def check_hold(when: When, now: datetime, limit: timedelta, label: str) -> None:
    """A provider holds mail only so far ahead (SendGrid: 72 hours); beyond, refuse before sending."""
    if when.at - now > limit:
        hours = int(limit.total_seconds() // 3600)
        raise NewsletterError(f"{when.describe()} is more than {hours} hours ahead: {label} holds scheduled "
                              f"mail for at most {hours} hours", field="--at",
                              hint=f"run the send (with --at) within {hours} hours of that time")


class CannotHold(NewsletterError):
    """--at with a provider that delivers at once: the ready-to-paste alternatives ride along."""

    def __init__(self, label: str, lines: list[str]):
        super().__init__(f"{label} cannot hold mail until a time: --at needs SendGrid", field="--at",
                         hint="run the same send at that time instead: a cron or systemd-timer line is printed above")
        self.lines = lines


def alternatives(when: When, argv: Sequence[str], workdir: Path) -> list[str]:
    """A cron line (the machine's local time) and systemd timer lines (UTC) running argv at `when`.

    A cron line repeats every year on that date: the comment says to remove it afterwards;
    cron reads % as a line break, so it is escaped.
    """
    exe = shutil.which("newsletter")
    command = [exe] if exe else [sys.executable, "-m", "newsletter_mailer"]
    cmd = " ".join(shlex.quote(str(a)) for a in [*command, *argv])
    local = when.at.astimezone()
    utc = when.at.astimezone(timezone.utc)
    folder = shlex.quote(str(workdir))
    return [
        f"# cron (crontab -e), this machine's local time {local:%Y-%m-%d %H:%M %Z}; remove the line afterwards:",
        f"{local.minute} {local.hour} {local.day} {local.month} * cd {folder} && {cmd}".replace("%", "\\%"),
        "# systemd timer (a .timer with this line, and its .service with the two after it):",
        f"OnCalendar={utc:%Y-%m-%d %H:%M:%S} UTC",
        f"WorkingDirectory={workdir}",
        f"ExecStart={cmd}",
    ]
