"""Email address checks: syntax only (no DNS), normalised, one place for every caller."""

from __future__ import annotations

import importlib
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, validate_email


def _share_domain_checks() -> None:
    """Check each domain once, not once per address: two thirds of email-validator's time.

    validate_email checks the part after the @ with validate_email_domain_name, a pure function
    of the domain, two flags and the SPECIAL_USE_DOMAIN_NAMES setting; a list of a million
    addresses has a few thousand domains. Its results (fresh dicts the caller only reads) are
    memoised on all four; refusals are not cached, so each raises as before.
    """
    module = importlib.import_module("email_validator.validate_email")
    check_domain = getattr(module, "validate_email_domain_name", None)
    if check_domain is None or getattr(check_domain, "_shared", False):
        return

    @lru_cache(maxsize=8192)
    def cached(domain: str, test_environment: bool, globally_deliverable: bool, special_use: tuple):
        return check_domain(domain, test_environment=test_environment, globally_deliverable=globally_deliverable)

    def shared(domain: str, test_environment: bool = False, globally_deliverable: bool = True):
        return dict(cached(domain, test_environment, globally_deliverable,
                           tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)))

    shared._shared = True  # type: ignore[attr-defined]
    module.validate_email_domain_name = shared


_share_domain_checks()


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
