"""WCAG 2.2 AA contrast of every colour pair the templates use, in light and dark mode.

The pairs are those of email.mjml.j2 and web.html.j2, taken from palette.py (so what is checked is
what is drawn), each with the setting to change when it fails.
"""

from __future__ import annotations

from newsletter_mailer import palette
from newsletter_mailer.checks.result import Check
from newsletter_mailer.colour import AA, AA_LARGE, contrast

NAME = "contrast"

# (what, foreground, background, large text?, light setting, dark setting)
_PAIRS = (
    ("body text", "text", "surface", False, "brand.text_color", "brand.dark.text"),
    ("links", "link", "surface", False, "brand.link_color", "brand.dark.link"),
    ("headings (21 px bold)", "heading", "surface", True, "brand.primary_color", "brand.dark.heading"),
    ("header title (28 px bold)", "on_primary", "primary", True, "brand.primary_color", "brand.dark.primary"),
    ("header date (14 px)", "on_primary", "primary", False, "brand.primary_color", "brand.dark.primary"),
    ("button text (16 px bold)", "on_primary", "primary", False, "brand.primary_color", "brand.dark.primary"),
    ("footer text", "muted", "background", False, "brand.background_color", "brand.dark.background"),
    ("footer links", "link", "background", False, "brand.link_color", "brand.dark.link"),
)


def contrast_checks(brand) -> list[Check]:
    out: list[Check] = []
    schemes = (("light", palette.light(brand), 0), ("dark", palette.dark(brand), 1))
    for mode, p, which in schemes:
        for what, fg, bg, large, *settings in _PAIRS:
            need = AA_LARGE if large else AA
            a, b = getattr(p, fg), getattr(p, bg)
            ratio = contrast(a, b)
            if ratio < need:
                out.append(Check("error", f"{mode} mode: {what} {a} on {b} has contrast {ratio:.2f}:1, "
                                          f"WCAG AA needs {need:g}:1 ({settings[which]})",
                                 NAME, field=settings[which], in_settings=True))
    if not out:
        out.append(Check("ok", f"{len(_PAIRS)} colour pairs reach WCAG AA contrast in light and dark mode", NAME))
    return out
