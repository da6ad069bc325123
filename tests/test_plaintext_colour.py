"""The 72-column wrap of the text part, and the WCAG arithmetic behind the dark palette."""

from __future__ import annotations

import pytest

from newsletter_mailer import palette
from newsletter_mailer.colour import AA, contrast, readable
from newsletter_mailer.markdown_html import to_text
from newsletter_mailer.plaintext import underline, wrap
from newsletter_mailer.settings import Brand

URL = "https://example.org/a/very/long/address/that/is/longer/than/seventy-two/characters/x.pdf"


def test_wrap_is_the_same_with_or_without_hard_line_breaks():
    words = "The campaign speaks to children and young people, parents, practitioners and the " * 3
    soft = to_text(words)
    hard = to_text("\n".join(words.split(", ")).replace("\n", ",\n"))
    assert wrap(soft) == wrap(hard)
    assert all(len(line) <= 72 for line in wrap(soft).splitlines())


def test_a_url_is_never_broken_and_stands_alone_when_long():
    out = wrap(f"See the toolkit at {URL} for more.").splitlines()
    assert out == ["See the toolkit at", URL, "for more."]


def test_list_items_hang_under_their_first_word():
    out = wrap("  • " + "word " * 30).splitlines()
    assert out[0].startswith("  • word") and all(l.startswith("    word") for l in out[1:])
    assert all(len(l) <= 72 for l in out)


def test_a_long_heading_is_underlined_no_wider_than_the_wrap():
    lines = underline("A heading " * 10).splitlines()
    assert len(lines) == 3 and set(lines[-1]) == {"-"}
    assert len(lines[-1]) == max(len(l) for l in lines[:-1]) <= 72


@pytest.mark.parametrize("a, b, ratio", [("#000000", "#ffffff", 21.0), ("#ffffff", "#ffffff", 1.0),
                                         ("#777777", "#ffffff", 4.48)])
def test_contrast_matches_wcag(a, b, ratio):
    assert contrast(a, b) == pytest.approx(ratio, abs=0.01)


def test_readable_keeps_a_passing_colour_and_fixes_a_failing_one():
    assert readable("#1a5fa8", "#ffffff") == "#1a5fa8"
    fixed = readable("#1a5fa8", "#1e1a24")
    assert contrast(fixed, "#1e1a24") >= AA and fixed != "#1a5fa8"


@pytest.mark.parametrize("brand", [Brand(), Brand(primary_color="#ffcc00", link_color="#00ffff"),
                                   Brand(primary_color="#000000", link_color="#000080", text_color="#000000")])
def test_derived_dark_palette_reads(brand):
    d = palette.dark(brand)
    for fg in (d.text, d.link, d.heading):
        assert contrast(fg, d.surface) >= AA, (fg, d)
    assert contrast(d.muted, d.background) >= AA and contrast(d.on_primary, d.primary) >= AA


def test_dark_colours_set_in_brand_dark_win():
    d = palette.dark(Brand(dark={"link": "#99ccff", "background": "#000000"}))
    assert d.link == "#99ccff" and d.background == "#000000"
