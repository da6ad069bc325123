"""Colours as WCAG 2.2 measures them: relative luminance, contrast ratio, and mixing.

One small module so the template's derived dark palette and the accessibility checks use the
same arithmetic: what is designed to pass is what is checked.
"""

from __future__ import annotations

AA = 4.5  # normal text
AA_LARGE = 3.0  # large text (24 px, or 18.66 px bold) and interface parts


def rgb(colour: str) -> tuple[int, int, int]:
    """'#abc' or '#aabbcc' as (r, g, b) in 0-255."""
    h = colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def to_hex(r: float, g: float, b: float) -> str:
    return "#%02x%02x%02x" % tuple(max(0, min(255, round(c))) for c in (r, g, b))


def luminance(colour: str) -> float:
    """WCAG relative luminance, 0 (black) to 1 (white)."""
    def lin(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours, 1 to 21, whichever is lighter."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def mix(a: str, b: str, t: float) -> str:
    """a moved a fraction t (0-1) of the way towards b."""
    return to_hex(*(x + (y - x) * t for x, y in zip(rgb(a), rgb(b))))


def readable(colour: str, on: str, ratio: float = AA) -> str:
    """colour itself if it reaches ratio on `on`, else the least change towards white or black
    (whichever side of `on` has more room) that does: keeps the hue a brand chose."""
    if contrast(colour, on) >= ratio:
        return colour
    target = "#ffffff" if contrast("#ffffff", on) >= contrast("#000000", on) else "#000000"
    for step in range(1, 21):
        candidate = mix(colour, target, step / 20)
        if contrast(candidate, on) >= ratio:
            return candidate
    return target
