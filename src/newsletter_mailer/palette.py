"""The colours the email template uses, in light and dark mode.

Light comes from [brand] as written. Dark comes from [brand.dark] where set, otherwise it is
derived from the light brand: a near-black page tinted with the primary colour, a slightly
lighter card, and text, links and headings nudged (colour.readable) until they reach 4.5:1 on
that card, so a reader in dark mode gets a designed page, not a client's inverted guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from newsletter_mailer.colour import AA, mix, readable

WHITE = "#ffffff"


@dataclass(frozen=True)
class Palette:
    background: str  # the page around the 600 px column
    surface: str  # the column's cards (white in light mode)
    text: str
    muted: str  # small print on the page background (view-in-browser line, footer)
    link: str
    heading: str
    primary: str  # the header band and the button
    on_primary: str  # text on the primary colour


def light(brand) -> Palette:
    return Palette(background=brand.background_color, surface=WHITE, text=brand.text_color,
                   muted=readable("#555555", brand.background_color), link=brand.link_color,
                   heading=brand.primary_color, primary=brand.primary_color,
                   on_primary=readable(WHITE, brand.primary_color))


def dark(brand) -> Palette:
    d = brand.dark
    background = d.background or mix(brand.primary_color, "#000000", 0.88)
    surface = d.surface or mix(brand.primary_color, "#1e1e1e", 0.82)
    text = d.text or readable("#e6e4ea", surface)
    primary = d.primary or readable(brand.primary_color, WHITE)
    return Palette(background=background, surface=surface, text=text,
                   muted=readable(mix(text, background, 0.2), background),
                   link=d.link or readable(brand.link_color, surface, AA),
                   heading=d.heading or readable(brand.primary_color, surface, AA),
                   primary=primary, on_primary=readable(WHITE, primary))
