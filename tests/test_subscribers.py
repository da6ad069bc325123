"""The subscriber CSV: headers, statuses, tags, dedupe, suppression, skips and every broken-file error."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter_mailer import addresses
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.subscribers import (
    Skips,
    Subscriber,
    SubscriberList,
    merge_name,
    read_suppressions,
)

EXAMPLE_LIST = Path(__file__).resolve().parents[1] / "subscribers.csv.example"


def write(tmp_path: Path, text: str | bytes, name: str = "list.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def emails(path: Path, **kw) -> list[str]:
    return [s.email for s in SubscriberList(path, **kw)]


def error(path: Path, **kw) -> NewsletterError:
    with pytest.raises(NewsletterError) as info:
        list(SubscriberList(path, **kw))
    return info.value


# --- headers -----------------------------------------------------------------

def test_headers_are_case_insensitive_and_trimmed(tmp_path):
    path = write(tmp_path, " EMAIL , Name ,STATUS,  tags \na@example.org, Ann ,Subscribed,X\n")
    [sub] = SubscriberList(path)
    assert sub == Subscriber("a@example.org", "Ann", {}, frozenset({"x"}), 2)


def test_other_columns_are_merge_fields_with_normalised_names(tmp_path):
    path = write(tmp_path, "email,School Year,first-name, City ,,\n"
                           "a@example.org,Year 7,Ann, Leeds ,ignored,\n")
    subs = SubscriberList(path)
    assert subs.columns == {"school_year", "first_name", "city"}
    [sub] = subs
    assert sub.fields == {"school_year": "Year 7", "first_name": "Ann", "city": "Leeds"}
    assert sub.name == ""


def test_merge_name():
    assert merge_name("School Year") == "school_year"
    assert merge_name(" First-Name ") == "first_name"
    assert merge_name("CITY") == "city"


def test_columns_known_before_iterating_and_file_closed(tmp_path):
    path = write(tmp_path, "email,Year\na@example.org,7\n")
    subs = SubscriberList(path)
    assert subs.columns == {"year"}
    path.unlink()  # __init__ must not hold the file open or depend on it afterwards
    assert subs.columns == {"year"}


@pytest.mark.parametrize("header, first, second", [
    ("email,School Year,school-year", "School Year", "school-year"),
    ("Email,name,EMAIL", "Email", "EMAIL"),
    ("email,City, city ", "City", "city"),
])
def test_headers_mapping_to_the_same_name_are_an_error(tmp_path, header, first, second):
    path = write(tmp_path, header + "\na@example.org,x,y\n")
    with pytest.raises(NewsletterError) as info:
        SubscriberList(path)
    exc = info.value
    assert exc.path == str(path) and exc.line == 1
    assert first in exc.message and second in exc.message


def test_missing_email_column_is_an_error(tmp_path):
    path = write(tmp_path, "name,mail\nAnn,a@example.org\n")  # e-mail, Email Address: aliases of email
    with pytest.raises(NewsletterError) as info:
        SubscriberList(path)
    assert "no 'email' column" in info.value.message
    assert info.value.path == str(path) and info.value.line == 1


def test_semicolon_separated_file_gets_a_hint(tmp_path):
    path = write(tmp_path, "email;name\na@example.org;Ann\n")
    with pytest.raises(NewsletterError) as info:
        SubscriberList(path)
    assert "';'" in info.value.hint


def test_header_only_file_has_no_subscribers(tmp_path):
    subs = SubscriberList(write(tmp_path, "email,name\n"))
    assert list(subs) == [] and subs.skips.total() == 0


# --- encodings and CSV syntax ------------------------------------------------

def test_bom_crlf_and_quoted_commas_and_newlines(tmp_path):
    text = ('email,name,notes\r\n'
            'a@example.org,"Smith, Ann","line one\r\nline two"\r\n'
            'b@example.org,Bob,plain\r\n')
    path = write(tmp_path, b"\xef\xbb\xbf" + text.encode())
    subs = list(SubscriberList(path))
    assert [(s.email, s.name, s.fields["notes"], s.line) for s in subs] == [
        ("a@example.org", "Smith, Ann", "line one\r\nline two", 2),
        ("b@example.org", "Bob", "plain", 4),  # the quoted newline made record 1 two lines
    ]


def test_non_ascii_names_survive(tmp_path):
    [sub] = SubscriberList(write(tmp_path, "email,name\nc@example.org,Chloé Dubois\n"))
    assert sub.name == "Chloé Dubois"


def test_short_rows_are_padded_and_long_rows_trimmed(tmp_path):
    path = write(tmp_path, "email,name,city\na@example.org\nb@example.org,Bob,Leeds,extra\n")
    subs = list(SubscriberList(path))
    assert [(s.name, s.fields) for s in subs] == [("", {"city": ""}), ("Bob", {"city": "Leeds"})]


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path, b"email,name\na@example.org,Ann\nb@example.org,Caf\xe9\n")
    exc = error(path)
    assert exc.path == str(path) and exc.line == 3
    assert "not UTF-8" in exc.message and "UTF-8" in exc.hint


def test_invalid_utf8_deep_in_a_large_file_names_its_line(tmp_path):
    rows = "".join(f"u{i}@example.org,N\r\n" for i in range(3000))
    path = write(tmp_path, b"email,name\r\n" + rows.encode() + b"x@example.org,\xff\r\n")
    assert error(path).line == 3002


def test_character_cut_short_at_the_end_of_the_file(tmp_path):
    path = write(tmp_path, b"email,name\na@example.org,Ann\nb@example.org,Caf\xc3")
    exc = error(path)
    assert exc.line == 3 and "not UTF-8" in exc.message


def test_invalid_utf8_in_the_header(tmp_path):
    path = write(tmp_path, b"email,n\xc3me\n")
    with pytest.raises(NewsletterError) as info:
        SubscriberList(path)
    assert info.value.line == 1 and "not UTF-8" in info.value.message


def test_nul_byte_names_the_line(tmp_path):
    path = write(tmp_path, b"email,name\na@example.org,Ann\nb@example.org,B\x00b\n")
    exc = error(path)
    assert exc.path == str(path) and exc.line == 3 and "NUL" in exc.message


def test_unclosed_quote_is_an_error_at_the_record_start(tmp_path):
    path = write(tmp_path, 'email,name\na@example.org,Ann\nb@example.org,"Bob\n'
                 + "more text\n" * 20000)
    exc = error(path)
    assert exc.line == 3 and "field limit" in exc.message


def test_missing_file(tmp_path):
    with pytest.raises(NewsletterError) as info:
        SubscriberList(tmp_path / "nope.csv")
    assert info.value.path == str(tmp_path / "nope.csv") and "not found" in info.value.message


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(NewsletterError) as info:
        SubscriberList(tmp_path)
    assert info.value.path == str(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n,,\n"])
def test_empty_file_is_an_error(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(NewsletterError) as info:
        SubscriberList(path)
    assert info.value.path == str(path) and "empty" in info.value.message


@pytest.mark.parametrize("junk", [
    b"\x00" * 50,
    bytes(range(256)) * 4,
    b'"' * 10 + b"\r" * 10 + b"email\n" + b"\xff\xfe",
    b"email\n" + b"a@example.org\r\r\r\n\n\"\"\"" * 10,
    b"\xef\xbb\xbf",
])
def test_any_bytes_give_a_clean_error_or_a_result(tmp_path, junk):
    path = write(tmp_path, junk)
    try:
        list(SubscriberList(path))
    except NewsletterError:
        pass


_PIECES = [b"a", b"@", b".org", b",", b'"', b"\r", b"\n", b"\x00", b"\xff", b"\xc3", b"\xa9",
           b"email", b"Email,name,status,tags\n", b" ", b";", b"\xef\xbb\xbf", b"bounced", b"\x1b"]


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PIECES), max_size=60).map(b"".join))
def test_fuzz_no_traceback_escapes(tmp_path, data):
    path = write(tmp_path, data)
    for read in (lambda: list(SubscriberList(path, tag="a")), lambda: read_suppressions([path])):
        try:
            got = read()
        except NewsletterError as exc:
            assert exc.path == str(path)
        else:
            if got and isinstance(got, list):
                assert len({s.email.lower() for s in got}) == len(got)


# --- statuses, names, addresses ----------------------------------------------

def test_statuses(tmp_path):
    path = write(tmp_path, "email,status\n"
                           "a@example.org,\n"
                           "b@example.org, Subscribed \n"
                           "c@example.org,UNSUBSCRIBED\n"
                           "d@example.org,Bounced\n"
                           "e@example.org,maybe\n"
                           "f@example.org,subscribed\n")
    subs = SubscriberList(path)
    assert [s.email for s in subs] == ["a@example.org", "b@example.org", "f@example.org"]
    assert subs.skips.counts == {"unsubscribed": 1, "bounced": 1, "invalid": 1}
    assert subs.skips.lines == {"unsubscribed": [4], "bounced": [5], "invalid": [6]}
    assert "maybe" in subs.skips.details[6]


def test_invalid_addresses_are_skipped_with_line_and_reason(tmp_path):
    path = write(tmp_path, "email,name\na@example.org,A\nnot-an-address,X\nb@example.org,B\n"
                           "c@nodot,C\n,only a name\n")
    subs = SubscriberList(path)
    assert emails(path) == ["a@example.org", "b@example.org"]
    list(subs)
    assert subs.skips.counts == {"invalid": 3}
    assert subs.skips.lines["invalid"] == [3, 5, 6]
    assert "'not-an-address'" in subs.skips.details[3] and "@-sign" in subs.skips.details[3]
    assert "no email address" in subs.skips.details[6]


def test_addresses_are_normalised(tmp_path):
    [sub] = SubscriberList(write(tmp_path, "email\n  Ann.Smith@EXAMPLE.ORG  \n"))
    assert sub.email == addresses.check("Ann.Smith@EXAMPLE.ORG") == "Ann.Smith@example.org"


@pytest.mark.parametrize("name", ['"Ann\nSmith"', '"Ann\rBcc: x@evil.org"', "Ann\x1bX", "Ann\x7f",
                                  "Ann\x9b2J", "Ann\x85Smith", "\x1b]0;pwned\x07Ann"])
def test_name_with_line_break_or_control_character(tmp_path, name):
    """C0, DEL and C1 controls: the row is refused, it never reaches To:/Subject:."""
    path = write(tmp_path, f"email,name\na@example.org,{name}\nb@example.org,Bea\n")
    subs = SubscriberList(path)
    got = list(subs)
    assert [s.name for s in got] == ["Bea"]
    assert subs.skips.lines == {"invalid": [2]}
    assert "control character" in subs.skips.details[2]


ESCAPES = {"clear screen": "\x1b[2J", "OSC title": "\x1b]0;pwned\x07", "DEL": "\x7f",
           "C1 CSI": "\x9b2J", "bidi override": "\u202e"}


@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_skip_summary_never_prints_a_control_character_from_the_file(tmp_path, escape):
    """An invalid cell is quoted in the summary the CLI prints: escaped, never raw."""
    path = write(tmp_path, f"email,status\nx{escape}@example.org,\na@example.org,gone{escape}\n"
                           "b@example.org,unsubscribed\n")
    subs = SubscriberList(path)
    assert list(subs) == []
    lines = subs.skips.summary_lines()
    assert lines and lines[0].startswith("invalid: 2 (line 2: 'x")
    shown = "\n".join(lines)
    assert escape not in shown and not any(c in shown for c in "\x1b\x07\x7f\x9b\u202e")
    assert escape.encode("unicode_escape").decode() in shown  # still visible, as an escape


def test_names_are_trimmed_and_tabs_allowed(tmp_path):
    [sub] = SubscriberList(write(tmp_path, "email,name\na@example.org,  Ann\tSmith  \n"))
    assert sub.name == "Ann\tSmith"


# --- dedupe, blanks -----------------------------------------------------------

def test_duplicates_are_case_insensitive_and_the_first_wins(tmp_path):
    path = write(tmp_path, "email,name\nAnn@Example.org,First\nb@example.org,B\n"
                           "ann@EXAMPLE.ORG,Second\n ANN@example.org ,Third\n")
    subs = SubscriberList(path)
    got = list(subs)
    assert [(s.email, s.name) for s in got] == [("Ann@example.org", "First"),
                                                ("b@example.org", "B")]
    assert subs.skips.counts == {"duplicate": 2} and subs.skips.lines["duplicate"] == [4, 5]


def test_an_unsubscribed_row_is_not_resurrected_by_a_later_duplicate(tmp_path):
    path = write(tmp_path, "email,status\na@example.org,unsubscribed\nA@example.org,subscribed\n")
    subs = SubscriberList(path)
    assert list(subs) == []
    assert subs.skips.counts == {"unsubscribed": 1, "duplicate": 1}


def test_blank_rows_are_ignored_silently(tmp_path):
    path = write(tmp_path, "email,name\n\na@example.org,A\n,\n  ,  \n\r\nb@example.org,B\n\n")
    subs = SubscriberList(path)
    assert [(s.email, s.line) for s in subs] == [("a@example.org", 3), ("b@example.org", 7)]
    assert subs.skips.total() == 0


def test_a_million_blank_lines_are_fast(tmp_path):
    path = write(tmp_path, b"email\n" + b"\n" * 500_000 + b",\n" * 500_000 + b"a@example.org\n")
    t = time.perf_counter()
    subs = SubscriberList(path)
    got = list(subs)
    assert time.perf_counter() - t < 3
    assert [(s.email, s.line) for s in got] == [("a@example.org", 1_000_002)]
    assert subs.skips.total() == 0


# --- tags ---------------------------------------------------------------------

TAGGED = ("email,tags\n"
          "a@example.org, Parents ; Schools ;\n"
          "b@example.org,practitioners\n"
          "c@example.org,\n"
          "d@example.org,;;PARENTS\n")


def test_tags_are_split_trimmed_lowercased(tmp_path):
    subs = list(SubscriberList(write(tmp_path, TAGGED)))
    assert [s.tags for s in subs] == [frozenset({"parents", "schools"}),
                                      frozenset({"practitioners"}), frozenset(),
                                      frozenset({"parents"})]


def test_tag_filter_is_case_insensitive(tmp_path):
    subs = SubscriberList(write(tmp_path, TAGGED), tag=" PARENTS ")
    assert [s.email for s in subs] == ["a@example.org", "d@example.org"]
    assert subs.skips.counts == {"not tagged": 2} and subs.skips.lines["not tagged"] == [3, 4]


def test_tag_filter_without_tags_column_matches_nobody(tmp_path):
    subs = SubscriberList(write(tmp_path, "email\na@example.org\n"), tag="x")
    assert list(subs) == [] and subs.skips.counts == {"not tagged": 1}


# --- suppression ----------------------------------------------------------------

def test_suppression_plain_file(tmp_path):
    supp = write(tmp_path, "B@EXAMPLE.org\n\n  c@example.org  \nnot an address\nx@nodot\n",
                 "supp.txt")
    found = read_suppressions([supp])
    assert found == {"b@example.org", "c@example.org"}
    assert found.invalid == 2
    path = write(tmp_path, "email\na@example.org\nb@example.org\nC@Example.org\nd@example.org\n")
    subs = SubscriberList(path, suppress=found)
    assert [s.email for s in subs] == ["a@example.org", "d@example.org"]
    assert subs.skips.counts == {"suppressed": 2} and subs.skips.lines["suppressed"] == [3, 4]


def test_suppression_csv_file_and_several_files(tmp_path):
    csv_form = write(tmp_path, "\ufeffName, EMAIL \nAnn,a@example.org\n\"Smith, B\",B@example.org\n"
                               "x,bad\n", "unsubs.csv")
    header_only = write(tmp_path, "Email\r\nc@example.org\r\n", "one-column.csv")
    plain = write(tmp_path, "d@example.org\n", "plain.txt")
    found = read_suppressions([csv_form, header_only, plain])
    assert found == {"a@example.org", "b@example.org", "c@example.org", "d@example.org"}
    assert found.invalid == 1
    assert isinstance(found, frozenset)


def test_suppression_csv_without_email_column_is_an_error(tmp_path):
    supp = write(tmp_path, "name,address\nAnn,a@example.org\n", "supp.csv")
    with pytest.raises(NewsletterError) as info:
        read_suppressions([supp])
    assert info.value.path == str(supp) and info.value.line == 1


def test_suppression_file_errors_are_clean(tmp_path):
    with pytest.raises(NewsletterError):
        read_suppressions([tmp_path / "missing.txt"])
    bad = write(tmp_path, b"a@example.org\n\xff\n", "bad.txt")
    with pytest.raises(NewsletterError) as info:
        read_suppressions([bad])
    assert info.value.line == 2


def test_empty_suppression_list(tmp_path):
    assert read_suppressions([]) == frozenset()
    assert read_suppressions([write(tmp_path, "", "empty.txt")]) == frozenset()


# --- skips bookkeeping -----------------------------------------------------------

def test_skips_keep_the_first_1000_lines_but_count_all(tmp_path):
    rows = "".join(f"dup{i % 2}@example.org\n" for i in range(1502))
    subs = SubscriberList(write(tmp_path, "email\n" + rows))
    assert len(list(subs)) == 2
    assert subs.skips.counts == {"duplicate": 1500}
    assert subs.skips.lines["duplicate"] == list(range(4, 1004))
    assert subs.skips.total() == 1500
    [summary] = subs.skips.summary_lines()
    assert summary.startswith("duplicate: 1500 (lines 4, 5, 6") and summary.endswith(
        "… and 1490 more)")


def test_summary_lines():
    skips = Skips()
    skips.add("duplicate", 9)
    skips.add("invalid", 7, "'not-an-address': An email address must have an @-sign.")
    assert skips.summary_lines() == [
        "invalid: 1 (line 7: 'not-an-address': An email address must have an @-sign.)",
        "duplicate: 1 (line 9)",
    ]
    assert Skips().summary_lines() == [] and Skips().total() == 0


def test_two_iterations_give_the_same_result_with_fresh_skips(tmp_path):
    path = write(tmp_path, "email,status\na@example.org,\nbad,\nA@example.org,\nb@example.org,bounced\n")
    subs = SubscriberList(path)
    first, skips1 = list(subs), subs.skips
    second, skips2 = list(subs), subs.skips
    assert first == second and [s.email for s in first] == ["a@example.org"]
    assert skips1 is not skips2 and skips1 == skips2
    assert skips2.counts == {"invalid": 1, "duplicate": 1, "bounced": 1}


def test_skips_are_visible_during_iteration(tmp_path):
    subs = SubscriberList(write(tmp_path, "email\nbad\na@example.org\n"))
    for _ in subs:
        assert subs.skips.counts == {"invalid": 1}


# --- memory ------------------------------------------------------------------------

def test_200k_rows_stream_without_keeping_rows(tmp_path, monkeypatch):
    """Only the set of seen addresses may grow: one object per row, where holding rows costs ~8.

    Live-object counts instead of tracemalloc, which would make this test take ~10 s.
    The validator is stubbed: this is about what the reader keeps, not email-validator's speed.
    """
    monkeypatch.setattr(addresses, "check", lambda a: a)
    n = 200_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("email,name,tags,notes\n")
        f.writelines(f"u{i}@example.org,User {i},a;b,{'x' * 100}\n" for i in range(n))
    marks = {}
    base = sys.getallocatedblocks()
    for i, sub in enumerate(SubscriberList(path), 1):
        if i in (50_000, n):
            marks[i] = sys.getallocatedblocks() - base
    assert i == n and sub.fields == {"notes": "x" * 100} and sub.line == n + 1
    per_row = (marks[n] - marks[50_000]) / (n - 50_000)
    assert per_row < 1.5, per_row


# --- the repository's example list ------------------------------------------------

@pytest.mark.skipif(not EXAMPLE_LIST.exists(), reason="subscribers.csv.example not written yet")
def test_example_list():
    subs = SubscriberList(EXAMPLE_LIST)
    got = list(subs)
    assert len(got) >= 5
    assert {"invalid", "duplicate", "unsubscribed", "bounced"} <= set(subs.skips.counts)
    assert len({s.email.lower() for s in got}) == len(got)
