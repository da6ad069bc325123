"""The preview page: the email at 600 px and 375 px side by side, in dark mode beside light, the
text part, the inbox line (subject and preheader) and the checks, each next to its section, as one
self-contained file."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from newsletter_mailer import render
from newsletter_mailer.checks import Check
from newsletter_mailer.compose import Composed

PREVIEW_TEMPLATE = "preview.html.j2"
DARK_RULES = "@media (prefers-color-scheme: dark)"


def dark_copy(html: str) -> str:
    """The email as a reader in dark mode sees it, whatever the preview's own colour scheme."""
    return html.replace(DARK_RULES, "@media all")


def by_section(c: Composed, checks: list[Check]) -> list[tuple[int, str, list[Check]]]:
    """(number, heading, its checks) of each section a check concerns."""
    return [(i + 1, s.heading, [k for k in checks if k.section == i + 1])
            for i, s in enumerate(c.issue.sections) if any(k.section == i + 1 for k in checks)]


def previewed(editions, shown, readers) -> list[dict]:
    """The preview's switch: each variant's name, readers (with --list) and email, when the issue
    has for: conditions (else [] and the page shows the one email as before)."""
    if editions is None or not editions.audiences.conditional:
        return []
    out = []
    for v in shown:
        subject, preheader, html, text = editions.composed(v).sample()
        out.append({"name": v.name, "readers": None if readers is None else readers[v], "subject": subject,
                    "preheader": preheader, "html": html, "dark_html": dark_copy(html), "text": text,
                    "sections": [i + 1 for i in v.sections]})
    return out


def preview_page(c: Composed, checks: list[Check], settings_dir: Path | None, extra_head: str = "",
                 variants: list[dict] = ()) -> str:
    subject, preheader, html, text = c.sample()
    view = render.View({"settings": c.settings, "slug": c.slug})
    if not variants:
        variants = [{"name": None, "readers": None, "subject": subject, "preheader": preheader, "html": html,
                     "dark_html": dark_copy(html), "text": text, "sections": None}]
    return render.render(tuple(render.search_path(settings_dir)), PREVIEW_TEMPLATE, view,
                         subject=variants[0]["subject"], preheader=variants[0]["preheader"], variants=variants,
                         html=variants[0]["html"], dark_html=variants[0]["dark_html"], text=variants[0]["text"],
                         checks=[k for k in checks if k.section is None], sections=by_section(c, checks),
                         problem=None, extra_head=Markup(extra_head))


def problem_page(settings, slug: str, message: str, settings_dir: Path | None, extra_head: str = "") -> str:
    """Shown by the watch server when an edit breaks the issue: the error instead of a dead server."""
    view = render.View({"settings": settings, "slug": slug})
    return render.render(tuple(render.search_path(settings_dir)), PREVIEW_TEMPLATE, view,
                         subject="", preheader="", variants=[], html="", dark_html="", text="", checks=[], sections=[],
                         problem=message,
                         extra_head=Markup(extra_head))
