"""The preview page: the email at 600 px and 375 px side by side, the text part,
the inbox line (subject and preheader) and the checks, as one self-contained file."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from newsletter_mailer import render
from newsletter_mailer.checks import Check
from newsletter_mailer.compose import Composed

PREVIEW_TEMPLATE = "preview.html.j2"


def preview_page(c: Composed, checks: list[Check], settings_dir: Path | None, extra_head: str = "") -> str:
    subject, preheader, html, text = c.sample()
    view = render.View({"settings": c.settings, "slug": c.slug})
    return render.render(tuple(render.search_path(settings_dir)), PREVIEW_TEMPLATE, view,
                         subject=subject, preheader=preheader, html=html, text=text, checks=checks,
                         problem=None, extra_head=Markup(extra_head))


def problem_page(settings, slug: str, message: str, settings_dir: Path | None, extra_head: str = "") -> str:
    """Shown by the watch server when an edit breaks the issue: the error instead of a dead server."""
    view = render.View({"settings": settings, "slug": slug})
    return render.render(tuple(render.search_path(settings_dir)), PREVIEW_TEMPLATE, view,
                         subject="", preheader="", html="", text="", checks=[], problem=message,
                         extra_head=Markup(extra_head))
