"""Reader tokens: sealed, bound to secret, list and purpose; never raise on garbage."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given, strategies as st

from newsletter_mailer import tokens

SECRET, LIST = b"s3cret-for-tokens", "CSCP Newsletter <cscp-newsletter.example.org>"
ADDRESS = "ann.reader@example.org"


def test_unsubscribe_round_trip_is_deterministic_and_hides_the_address():
    t = tokens.make_unsubscribe(SECRET, LIST, "Ann.Reader@Example.org")
    assert t == tokens.make_unsubscribe(SECRET, LIST, ADDRESS)
    assert tokens.read_unsubscribe(SECRET, LIST, t) == (ADDRESS, None)
    assert "ann" not in t.lower() and "example" not in t.lower() and "=" not in t
    assert len(t) == -(-(16 + len(ADDRESS)) * 4 // 3)  # 16-byte tag + the address, base64 without padding


def test_unsubscribe_round_trip_with_the_issue():
    t = tokens.make_unsubscribe(SECRET, LIST, "Ann.Reader@Example.org", "2024-05-spring")
    assert t == tokens.make_unsubscribe(SECRET, LIST, ADDRESS, "2024-05-spring")  # deterministic per issue
    assert tokens.read_unsubscribe(SECRET, LIST, t) == (ADDRESS, "2024-05-spring")
    other = tokens.make_unsubscribe(SECRET, LIST, ADDRESS, "2024-06-summer")
    assert other != t and tokens.read_unsubscribe(SECRET, LIST, other) == (ADDRESS, "2024-06-summer")
    assert t != tokens.make_unsubscribe(SECRET, LIST, ADDRESS)
    assert "spring" not in t and "ann" not in t.lower()
    assert len(t) == -(-(16 + len(ADDRESS) + 1 + len("2024-05-spring")) * 4 // 3)
    assert tokens.read_unsubscribe(SECRET, LIST, tokens.make_unsubscribe(SECRET, LIST, ADDRESS, "")) == (ADDRESS, None)


# Made by the first version (the address alone sealed): links in issues already sent keep working.
V1_TOKEN = "Yj1nd3rfR5xmkA1cGHN9CTKETdfhNsS01hpj4D62FzM1K5Eg1aQ"


def test_a_token_made_before_the_issue_was_sealed_still_reads():
    assert tokens.read_unsubscribe(SECRET, LIST, V1_TOKEN) == (ADDRESS, None)
    assert tokens.make_unsubscribe(SECRET, LIST, ADDRESS) == V1_TOKEN


def test_confirm_round_trip_with_name_and_expiry():
    later = int(time.time()) + 3600
    t = tokens.make_confirm(SECRET, LIST, ADDRESS, "Ann Ünicode", later)
    assert tokens.read_confirm(SECRET, LIST, t) == (ADDRESS, "Ann Ünicode")
    assert tokens.read_confirm(SECRET, LIST, tokens.make_confirm(SECRET, LIST, ADDRESS, None, later)) == (ADDRESS, None)
    assert tokens.read_confirm(SECRET, LIST, t, now=later + 1) is None


def _every_byte_flipped(token: str):
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for i in range(len(raw)):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        yield base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()


def test_any_tampered_byte_is_refused():
    t = tokens.make_unsubscribe(SECRET, LIST, ADDRESS)
    assert all(tokens.read_unsubscribe(SECRET, LIST, bad) is None for bad in _every_byte_flipped(t))
    i = tokens.make_unsubscribe(SECRET, LIST, ADDRESS, "2024-05-spring")
    assert all(tokens.read_unsubscribe(SECRET, LIST, bad) is None for bad in _every_byte_flipped(i))
    c = tokens.make_confirm(SECRET, LIST, ADDRESS, "Ann", 2**31)
    assert all(tokens.read_confirm(SECRET, LIST, bad) is None for bad in _every_byte_flipped(c))


def test_truncated_extended_and_respelt_tokens_are_refused():
    t = tokens.make_unsubscribe(SECRET, LIST, ADDRESS)
    for bad in (t[:-1], t[:-4], t[:22], t + "A", t + "=", t + "==", "", t.replace("-", "+").replace("_", "/")):
        if bad != t:
            assert tokens.read_unsubscribe(SECRET, LIST, bad) is None


def test_other_secret_list_or_purpose_is_refused():
    t = tokens.make_unsubscribe(SECRET, LIST, ADDRESS)
    assert tokens.read_unsubscribe(b"another secret", LIST, t) is None
    assert tokens.read_unsubscribe(SECRET, "Other <other.example.org>", t) is None
    assert tokens.read_confirm(SECRET, LIST, t) is None
    i = tokens.make_unsubscribe(SECRET, LIST, ADDRESS, "2024-05-spring")
    assert tokens.read_unsubscribe(b"another secret", LIST, i) is None
    assert tokens.read_unsubscribe(SECRET, "Other <other.example.org>", i) is None
    c = tokens.make_confirm(SECRET, LIST, ADDRESS, None, 2**31)
    assert tokens.read_unsubscribe(SECRET, LIST, c) is None
    assert tokens.read_confirm(b"another secret", LIST, c) is None
    assert tokens.read_confirm(SECRET, "Other <other.example.org>", c) is None


@given(st.one_of(st.text(max_size=2000), st.binary(max_size=200).map(
    lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())))
def test_garbage_never_raises(garbage):
    assert tokens.read_unsubscribe(SECRET, LIST, garbage) is None
    assert tokens.read_confirm(SECRET, LIST, garbage) is None


@pytest.mark.parametrize("value", [None, 12, b"bytes", "x" * 100_000])
def test_wrong_types_and_huge_input_are_refused(value):
    assert tokens.read_unsubscribe(SECRET, LIST, value) is None


def test_cost_per_token(capsys):
    """Runs once per recipient: print the cost (a few microseconds), no timing assertion."""
    n = 5000
    start = time.perf_counter()
    made = [tokens.make_unsubscribe(SECRET, LIST, f"reader{i}@example.org") for i in range(n)]
    mid = time.perf_counter()
    assert all(tokens.read_unsubscribe(SECRET, LIST, t) for t in made)
    end = time.perf_counter()
    with capsys.disabled():
        print(f"\ntokens: make {(mid - start) / n * 1e6:.1f} µs, read {(end - mid) / n * 1e6:.1f} µs per token")
