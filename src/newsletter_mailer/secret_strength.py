"""Whether a secret could be guessed: one reader's own token lets them test guesses offline.

A reader holds plaintext (their address) and its sealed token, so any secret a person would
type (`newsletter-secret`, a pass phrase, `aaaa…`) falls to a dictionary run on a laptop, and
with it every other reader's link. Only machine-made randomness is accepted: base64 or hex
characters, long enough, varied enough, with no word from a list of the usual picks.
"""

from __future__ import annotations

import math
import re

MIN_CHARS = 32
MIN_BITS = 128  # an estimate: length × log2(the alphabet its character classes span)
HOW = 'make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
_CHARS = re.compile(r"[A-Za-z0-9+/=_-]+")
_CLASSES = ((re.compile(r"[a-z]"), 26), (re.compile(r"[A-Z]"), 26), (re.compile(r"[0-9]"), 10),
            (re.compile(r"[+/=_-]"), 4))
_HEX = re.compile(r"[0-9a-fA-F]+")
# Five characters or more: a shorter word turns up by chance in about one random secret in a thousand.
WORDS = ("secret", "password", "passwd", "newsletter", "letter", "changeme", "change", "example", "admin",
         "qwerty", "azerty", "letmein", "welcome", "default", "token", "tests", "sample", "unsubscribe",
         "mailer", "private", "abcdef", "123456", "654321", "000000", "111111", "dragon", "monkey", "master",
         "hello", "login", "value")


def problem(value: str, name: str) -> str | None:
    """Why `value` is guessable (one line naming `name`), or None when it looks machine-made."""
    if len(value) < MIN_CHARS:
        return f"{name} is {len(value)} characters: too short to keep links unforgeable (use at least {MIN_CHARS})"
    if not _CHARS.fullmatch(value):
        return f"{name} has characters other than base64 or hex: it looks typed by a person, not generated"
    lower = value.lower()
    word = next((w for w in WORDS if w in lower), None)
    if word:
        return f"{name} contains the word '{word}': guessable from a list of common secrets"
    if len(set(value)) < 10:
        return f"{name} uses only {len(set(value))} different characters: too little variety to be random"
    if _HEX.fullmatch(value):
        alphabet = 16
    else:
        alphabet = sum(size for pattern, size in _CLASSES if pattern.search(value))
    if len(value) * math.log2(alphabet) < MIN_BITS:
        return f"{name} holds about {len(value) * math.log2(alphabet):.0f} bits: too few to resist guessing"
    steps = sum(1 for a, b in zip(value, value[1:]) if abs(ord(a) - ord(b)) <= 1)
    if steps > len(value) // 2:
        return f"{name} runs in sequences (abc…, 123…, aaa…): it does not look random"
    return None
