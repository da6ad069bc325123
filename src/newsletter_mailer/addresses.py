"""Email address checks: syntax only (no DNS), normalised, one place for every caller."""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


@lru_cache(maxsize=256)
def normalise(address: str) -> str:
    """The normalised address, or ValueError with email-validator's reason."""
    if any(c in address for c in "\r\n"):
        raise ValueError("an address cannot contain a line break")
    try:
        info = validate_email(address.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"'{address[:80]}' is not a valid email address: {exc}") from None
    return info.ascii_email or info.normalized


def check(address: str) -> str:
    """Uncached variant for the subscriber list (a million distinct addresses must not pile up)."""
    if "\r" in address or "\n" in address:
        raise ValueError("line break in address")
    try:
        info = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return info.ascii_email or info.normalized
