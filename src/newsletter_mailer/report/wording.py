"""Numbers, spans and times as a person writes them on the report: "1,200 a minute",
"in the first hour", "7 December 2026, 14:05 UTC" (not "1200.0 per minute", "1 hour(s)", ISO)."""

from __future__ import annotations

import datetime as dt


def count(n: int, word: str) -> str:
    """"1 issue", "3 issues", "1,200 responses"."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def first(n: int, unit: str) -> str:
    """"the first hour", "the first 3 days"."""
    return f"the first {unit}" if n == 1 else f"the first {count(n, unit)}"


def per_minute(rate: float | None) -> str:
    """"1,200 a minute", "4.5 a minute", "—" when unknown."""
    if rate is None:
        return "—"
    return (f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}".removesuffix(".0")) + " a minute"


def long_date(day: dt.date | str) -> str:
    """"7 December 2026" (a date, or its ISO text)."""
    d = dt.date.fromisoformat(day) if isinstance(day, str) else day
    return f"{d.day} {d:%B %Y}"


def moment(at: dt.datetime) -> str:
    """"7 December 2026, 14:05 UTC"."""
    at = at.astimezone(dt.timezone.utc)
    return f"{long_date(at.date())}, {at:%H:%M} UTC"
