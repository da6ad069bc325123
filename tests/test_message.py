"""The per-recipient path: split templates, filled values, and the MIME message they make."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from newsletter_mailer.message import HeaderValueError, MessageTemplate, _qp_value, address, header_value, qp
from newsletter_mailer.personalise import Template


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def display_name(data: bytes) -> str:
    """RFC 2047 decoding of To's display name (whitespace between encoded words dropped, as the RFC
    says; the email package's new address parser keeps it, a known quirk, so use the classic decoder)."""
    from email.header import decode_header, make_header

    raw = email.message_from_bytes(data)["To"]
    decoded = str(make_header(decode_header(raw)))
    name = decoded.rsplit(" <", 1)[0]
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return name


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """One composed issue for the module (hypothesis reuses it across generated inputs)."""
    import shutil

    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings
    from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE

    d = tmp_path_factory.mktemp("msg")
    shutil.copy(EXAMPLE_SETTINGS, d / "newsletter.toml")
    (d / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    settings, sdir = load_settings(d / "newsletter.toml")
    return compose(d / "mini.yaml", settings, sdir)


def build(composed, name: str, school_year: str = "", email_addr: str = "r@example.org", prefix: str = ""):
    values = composed.filler().values(email_addr, name, {"school_year": school_year}, "https://example.org/u?t=1")
    return MessageTemplate(composed, subject_prefix=prefix).build(email_addr, name, values)


def test_template_split_and_fill_round_trip():
    import re

    rx = re.compile(r"mfab(\d+)z")
    t = Template.split("a mfab0z b mfab1z mfab0z", rx)
    assert t.parts == ("a ", " b ", " ", "") and t.slots == (0, 1, 0)
    assert t.fill(["X", "{{ 7*7 }}"]) == "a X b {{ 7*7 }} X"


def test_composed_template_has_no_tokens_left(composed):
    html = composed.email_html_with_placeholders()
    assert composed.html.slots  # merge fields were found
    assert "mf" + "" not in "" and "{{ unsubscribe_url }}" in html
    assert not composed.html.fill(["V"] * len(composed.fields)).count("mf" + composed.html.parts[0][:0] + "z")


@pytest.mark.parametrize("name", ["Chloé Dubois", "Zoë 😀 Ünïcode", 'O"Brien, Jo (staff)', "a" * 150, "é" * 150, "😀" * 40])
def test_names_are_encoded_and_round_trip(composed, name):
    _, data = build(composed, name)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = parse(data)
    assert display_name(data) == name
    assert msg["To"].addresses[0].addr_spec == "r@example.org"
    assert msg["Subject"] == f"Hello {name}"


def test_non_ascii_value_in_ascii_template_is_encoded(composed):
    _, data = build(composed, "Chloé", "Année 5")
    msg = parse(data)
    text = msg.get_body(("plain",)).get_content()
    assert "Dear Chloé, welcome." in text and "For Année 5." in text
    for part in msg.iter_parts():
        assert part["Content-Transfer-Encoding"] == "quoted-printable"


@pytest.mark.parametrize("bad", ["Eve\r\nBcc: victim@example.org", "Eve\nX-Evil: 1", "Eve\rX"])
def test_header_injection_refused(composed, bad):
    with pytest.raises(HeaderValueError):
        build(composed, bad)
    with pytest.raises(HeaderValueError):
        header_value(bad, "Subject")
    with pytest.raises(HeaderValueError):
        address(bad, "r@example.org")


def test_subject_prefix(composed):
    _, data = build(composed, "Ann", prefix="[TEST] ")
    assert parse(data)["Subject"] == "[TEST] Hello Ann"


def test_qp_encodes_trailing_space_and_keeps_lines_short():
    out = qp("x" * 200 + " \nline ends with space \n")
    assert all(len(l) <= 76 for l in out.split("\r\n"))
    assert "=20" in out


value_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
                     max_size=300)


@hsettings(max_examples=300, deadline=None)
@given(name=value_text, year=value_text)
def test_any_values_round_trip_exactly(composed, name, year):
    """Whatever a subscriber's values are, they arrive as those characters: raw in text, escaped in HTML."""
    import html as htmlmod

    from newsletter_mailer.validators import header_problem

    if header_problem(name):  # the name fills the To and Subject: refused as a header value, never sent
        with pytest.raises(HeaderValueError):
            build(composed, name, year)
        name = "".join(c for c in name if c.isalnum() or c == " ")
    _, data = build(composed, name, year)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = parse(data)
    text = msg.get_body(("plain",)).get_content()
    body = msg.get_body(("html",)).get_content()
    expected_year = year if year else "all years"
    assert f"For {expected_year}." in text.replace("\r\n", "\n")
    assert f"For {htmlmod.escape(expected_year)}." in body


@hsettings(max_examples=2000, deadline=None)
@given(st.one_of(value_text, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=90),
                 st.sampled_from([".", "", " ", "a ", "=", "a=b", "x" * 75, "x" * 76, "-_" * 40])))
def test_a_merge_value_skips_the_encoder_only_when_it_is_its_own_encoding(value):
    """The fast path of _qp_value (short printable ASCII) must give exactly what the encoder gives."""
    assert _qp_value(value) == qp(value)
