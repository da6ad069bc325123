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


# --- the stable list id, old tokens, rotation (issue 19) -------------------------------------------

def _settings(tmp_path, top: str = "", web: str = ""):
    from tests.conftest import without_web
    from tests.helpers.webserver import ROOT
    from newsletter_mailer.settings import load_settings

    path = tmp_path / "newsletter.toml"
    example = without_web((ROOT / "newsletter.toml").read_text(encoding="utf-8"))
    path.write_text(top + example + f"\n[web]\n{web}\n", encoding="utf-8")
    return load_settings(path)[0]


def test_tokens_are_sealed_to_the_stable_id_and_a_display_rename_changes_nothing(tmp_path):
    from newsletter_mailer.listid import readable_ids

    before = readable_ids(_settings(tmp_path), tmp_path / "state")
    after = readable_ids(_settings(tmp_path, 'list_id = "Another name <cscp-newsletter.example.org>"\n'),
                         tmp_path / "state")
    assert before[0] == after[0] == "cscp-newsletter.example.org"
    token = tokens.make_unsubscribe(SECRET, before, "ann@example.org")
    assert tokens.read_unsubscribe(SECRET, after, token) == ("ann@example.org", None)


def test_a_token_made_by_the_code_before_opens_after_a_rename(tmp_path):
    import json

    from newsletter_mailer.listid import readable_ids
    from tests.helpers.webserver import ROOT

    legacy = json.loads((ROOT / "tests/golden/tokens_before_stable_list_id.json").read_text(encoding="utf-8"))
    secret = legacy["secret"].encode()
    readable_ids(_settings(tmp_path), tmp_path / "state")  # the first run after the upgrade records the header
    renamed = readable_ids(_settings(tmp_path, 'list_id = "CSCP newsletter <cscp-newsletter.example.org>"\n'),
                           tmp_path / "state")
    for words, token in legacy["unsubscribe"].items():
        email, _, issue = words.partition(" ")
        assert tokens.read_unsubscribe(secret, renamed, token) == (email, issue or None)
    c = legacy["confirm"]
    assert tokens.read_confirm(secret, renamed, c["token"], now=0) == (c["email"], c["name"])
    # a whole old List-Id in previous_list_ids opens them too, with no record in the state
    kept = readable_ids(_settings(tmp_path, web=f'previous_list_ids = ["{legacy["list_id_header"]}"]'),
                        tmp_path / "fresh")
    assert tokens.read_unsubscribe(secret, kept, legacy["unsubscribe"]["reader@example.org"])


def test_a_changed_list_id_is_refused_unless_kept(tmp_path):
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.listid import readable_ids

    readable_ids(_settings(tmp_path), tmp_path / "state")
    with pytest.raises(NewsletterError, match="list id changed from cscp-newsletter.example.org to new.example.org"):
        readable_ids(_settings(tmp_path, 'list_id = "CSCP <new.example.org>"\n'), tmp_path / "state")
    ids = readable_ids(_settings(tmp_path, 'list_id = "CSCP <new.example.org>"\n',
                                 'previous_list_ids = ["cscp-newsletter.example.org"]'), tmp_path / "state")
    old = tokens.make_unsubscribe(SECRET, "cscp-newsletter.example.org", "ann@example.org")
    assert ids[0] == "new.example.org" and tokens.read_unsubscribe(SECRET, ids, old) == ("ann@example.org", None)


def test_a_rotated_secret_stays_readable_until_it_expires(tmp_path):
    from newsletter_mailer.unsubscribe import load_secret, load_secrets, rotate

    state = tmp_path / "state"
    old, _ = load_secret(state, {})
    token = tokens.make_unsubscribe(old, LIST, "ann@example.org")
    assert "keep working until 1970-01-08" in rotate(state, {}, keep_days=7, now=0)
    keys, _ = load_secrets(state, {}, now=6 * 86400)
    assert keys[0] != old and tokens.make_unsubscribe(keys, LIST, "ann@example.org") != token
    assert tokens.read_unsubscribe(keys, LIST, token) == ("ann@example.org", None)
    keys, _ = load_secrets(state, {}, now=8 * 86400)
    assert tokens.read_unsubscribe(keys, LIST, token) is None and len(keys) == 1
    assert (state / "secret.previous").stat().st_mode & 0o777 == 0o600


def test_rotation_with_an_environment_secret_says_how(tmp_path):
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.unsubscribe import rotate

    with pytest.raises(NewsletterError, match="NEWSLETTER_PREVIOUS_SECRETS"):
        rotate(tmp_path, {"NEWSLETTER_SECRET": "x"}, keep_days=7)


# --- the tracked links' pseudonymous reader half (issue 24) ----------------------------------------

def test_a_click_pseudonym_hides_the_address_and_binds_issue_list_secret_and_variant():
    make = tokens.click_pseudonym_maker(SECRET, LIST, "2024-05-spring")
    t = make("Ann.Reader@Example.org")
    assert t == make(ADDRESS) and len(t) == 32 and t.isascii()  # deterministic per (reader, issue)
    assert "ann" not in t.lower() and "example" not in t.lower() and "=" not in t and "." not in t
    key, variant = tokens.read_click_pseudonym(SECRET, LIST, "2024-05-spring", t)
    assert variant is None and key.startswith("p") and len(key) == 33
    assert tokens.read_click_pseudonym(SECRET, LIST, "2024-05-spring", make("bob@example.org"))[0] != key
    other_issue = tokens.click_pseudonym_maker(SECRET, LIST, "2024-06-summer")(ADDRESS)
    assert other_issue[:16] != t[:16]  # not joinable across issues
    for v in ("A", "B"):
        tv = make(ADDRESS, v)
        assert tv[-1] == v and tokens.read_click_pseudonym(SECRET, LIST, "2024-05-spring", tv) == (key, v)
    assert make(ADDRESS, "C") == t  # no such variant: none
    refused = [("2024-06-summer", t), ("2024-05-spring", t + "B"), ("2024-05-spring", make(ADDRESS, "A")[:-1] + "B"),
               ("2024-05-spring", t[:-1]), ("2024-05-spring", t + "AA"), ("2024-05-spring", t[:31] + "=")]
    for issue, token in refused:
        assert tokens.read_click_pseudonym(SECRET, LIST, issue, token) is None, (issue, token)
    assert tokens.read_click_pseudonym(b"another secret", LIST, "2024-05-spring", t) is None
    assert tokens.read_click_pseudonym(SECRET, "Other <other.example.org>", "2024-05-spring", t) is None
    # a rotated secret and a previous list id stay readable, and read as the same reader
    assert tokens.read_click_pseudonym([b"new secret", SECRET], ["New <new.example.org>", LIST],
                                       "2024-05-spring", t) == (key, None)


def test_any_altered_character_of_a_click_pseudonym_is_refused():
    t = tokens.click_pseudonym_maker(SECRET, LIST, "x")(ADDRESS, "B")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len(t)):
        for c in alphabet[::7]:
            if c != t[i]:
                assert tokens.read_click_pseudonym(SECRET, LIST, "x", t[:i] + c + t[i + 1:]) is None, (i, c)


@given(st.one_of(st.text(max_size=80), st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode())))
def test_click_pseudonym_garbage_never_raises(garbage):
    assert tokens.read_click_pseudonym(SECRET, LIST, "x", garbage) is None


def test_a_link_code_carries_its_messages_link_count_under_the_mac_and_old_codes_still_check():
    url = "https://example.org/story"
    old = tokens.make_link_code(SECRET, LIST, "x", 3, url)  # as sent before the count was carried
    new = tokens.make_link_code(SECRET, LIST, "x", 3, url, 7)
    assert (len(old), len(new)) == (15, 18)
    assert tokens.read_link_code(old) == (3, 0) and tokens.read_link_code(new) == (3, 7)
    assert tokens.check_link_code(SECRET, LIST, "x", old, url) and tokens.check_link_code(SECRET, LIST, "x", new, url)
    raw = bytearray(base64.urlsafe_b64decode(new + "=="))
    raw[3] = 2  # the count altered: the MAC no longer matches
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert tokens.read_link_code(forged) == (3, 2) and not tokens.check_link_code(SECRET, LIST, "x", forged, url)
    raw[2:4] = b"\0\0"  # a count of 0 in the long form is no code
    assert tokens.read_link_code(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()) is None
    assert not tokens.check_link_code(SECRET, LIST, "x", new, url + "?")
    for bad in ("", new[:-1], new + "A", old + "AAA"[:2], "!" * 18, 18 * "é"):
        assert tokens.read_link_code(bad) is None or not tokens.check_link_code(SECRET, LIST, "x", bad, url)
