"""Email address checks: syntax only (no DNS), normalised, one place for every caller."""

from __future__ import annotations

import importlib
import threading
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, validate_email

# Names a private relay may deliver to (RFC 6761/6762, ICANN's .internal): refused by default
# as special-use, accepted with delivery.allow_local_domains, as are single-label domains.
LOCAL_NAMES = frozenset({"localhost", "local", "test", "internal"})
_patch_lock = threading.Lock()
_swap_lock = threading.Lock()  # the special-use list is a module global: swap it for one call at a time
_patched = False


def _share_domain_checks() -> None:
    """Check each domain once, not once per address: two thirds of email-validator's time.

    validate_email checks the part after the @ with validate_email_domain_name, a pure function
    of the domain, two flags and the SPECIAL_USE_DOMAIN_NAMES setting; a list of a million
    addresses has a few thousand domains. Its results (fresh dicts the caller only reads) are
    memoised on all four; refusals are not cached, so each raises as before. With
    globally_deliverable=False (a private relay) the LOCAL_NAMES are not special-use.
    """
    module = importlib.import_module("email_validator.validate_email")
    check_domain = getattr(module, "validate_email_domain_name", None)
    if check_domain is None or getattr(check_domain, "_shared", False):
        return

    @lru_cache(maxsize=8192)
    def cached(domain: str, test_environment: bool, globally_deliverable: bool, special_use: tuple):
        with _swap_lock:  # only on a cache miss
            saved = email_validator.SPECIAL_USE_DOMAIN_NAMES  # read by check_domain at call time
            email_validator.SPECIAL_USE_DOMAIN_NAMES = list(special_use)
            try:
                return check_domain(domain, test_environment=test_environment,
                                    globally_deliverable=globally_deliverable)
            finally:
                email_validator.SPECIAL_USE_DOMAIN_NAMES = saved

    def shared(domain: str, test_environment: bool = False, globally_deliverable: bool = True):
        special = tuple(d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES
                        if globally_deliverable or d not in LOCAL_NAMES)
        return dict(cached(domain, test_environment, globally_deliverable, special))

    shared._shared = True  # type: ignore[attr-defined]
    module.validate_email_domain_name = shared


def _validate(address: str, allow_local: bool):
    """email-validator's verdict; patches it on first use, not at import (importing has no effects)."""
    global _patched
    if not _patched:
        with _patch_lock:
            _share_domain_checks()
        _patched = True
    return validate_email(address, check_deliverability=False, allow_smtputf8=False,
                          globally_deliverable=not allow_local)


@lru_cache(maxsize=256)
def normalise(address: str, allow_local: bool = False) -> str:
    """The normalised address, or ValueError with email-validator's reason.

    allow_local accepts intranet names (user@localhost, single-label, .test/.internal/.local).
    """
    if any(c in address for c in "\r\n"):
        raise ValueError("an address cannot contain a line break")
    try:
        info = _validate(address.strip(), allow_local)
    except EmailNotValidError as exc:
        raise ValueError(f"'{address[:80]}' is not a valid email address: {exc}") from None
    return info.ascii_email or info.normalized


def check(address: str, allow_local: bool = False) -> str:
    """Uncached variant for the subscriber list (a million distinct addresses must not pile up)."""
    if "\r" in address or "\n" in address:
        raise ValueError("line break in address")
    try:
        info = _validate(address, allow_local)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return info.ascii_email or info.normalized


# Mail services known to ignore dots in the local part (and to be one mailbox under two names).
_DOTLESS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_keys(address: str) -> tuple[str, ...]:
    """The keys one inbox is counted under, so that `a+1@`, `A.b@` … count as one reader: the
    address lower-cased; without its `+tag` (most services deliver those to the same inbox); and
    for services that ignore dots (Gmail), without dots under one domain name."""
    lowered = address.lower()
    local, _, domain = lowered.rpartition("@")
    base = local.split("+", 1)[0] or local
    keys = [lowered, f"{base}@{domain}"]
    if domain in _DOTLESS:
        keys.append(f"{base.replace('.', '') or base}@{_DOTLESS[domain]}")
    return tuple(dict.fromkeys(keys))
