"""Jinja renders the MJML and text templates from an issue (step 2 of the pipeline).

Templates are found on a search path: the user's `templates/` folder next to
newsletter.toml first, then the built-in ones. Content merge fields arrive here
already turned into tokens (see mergefields), so they pass through as plain text.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jinja2
from markupsafe import Markup

from newsletter_mailer import markdown_html, media, palette, plaintext
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.mergefields import FieldTable
from newsletter_mailer.schema import Issue
from newsletter_mailer.settings import Settings

EMAIL_TEMPLATE = "email.mjml.j2"
TEXT_TEMPLATE = "email.txt.j2"
WEB_TEMPLATE = "web.html.j2"
FEED = "feed.xml"


def builtin_templates() -> Path:
    """Inside an installed wheel the templates sit in the package; in a checkout, at the root."""
    here = Path(__file__).resolve().parent
    packaged = here / "templates"
    return packaged if packaged.is_dir() else here.parents[1] / "templates"


def search_path(settings_dir: Path | None) -> list[str]:
    paths = []
    if settings_dir is not None and (settings_dir / "templates").is_dir():
        paths.append(str(settings_dir / "templates"))
    paths.append(str(builtin_templates()))
    return paths


@lru_cache(maxsize=8)
def environment(paths: tuple[str, ...]) -> jinja2.Environment:
    # auto_reload lets the watch server pick up edited templates from a cached environment.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(paths)),
        autoescape=lambda name: name is not None and not name.endswith(".txt.j2"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    env.filters.update(wrap=plaintext.wrap, underline=plaintext.underline)
    return env


@dataclass(frozen=True)
class View:
    """What the templates see: the issue with merge fields as tokens, Markdown rendered."""

    context: dict[str, Any]


def build_view(issue: Issue, settings: Settings, slug: str, table: FieldTable, *,
               archive_url: str | None = None, feed_url: str | None = None,
               local_image: Callable[[str], str] | None = None) -> View:
    """The issue as the templates see it. By default links are absolute (as mail clients need):
    "More issues" goes to the archive under web_base_url, the feed beside it, and a local image to
    its copy under the issue's page; the published site passes its own relative ones."""
    tok, url = table.tokenize, table.tokenize_url  # url: a link's address (see FieldTable.mark_url)

    def image(img) -> dict[str, Any] | None:
        if img is None:
            return None
        src = img.src
        src = local_image(src) if local_image is not None and media.is_local(src) else \
            media.image_url(settings, slug, src)
        return {"src": src, "alt": tok(img.alt), "href": url(img.href) if img.href else None}

    sections = []
    for s in issue.sections:
        body = _tokenize_markdown(table, s.body)
        sections.append({
            "heading": tok(s.heading),
            "body_html": Markup(markdown_html.to_html(body)),
            "body_text": markdown_html.to_text(body),
            "image": image(s.image),
            "layout": s.layout,
            "button": None if s.button is None else {"label": tok(s.button.label), "url": url(s.button.url)},
            "links": [{"text": tok(l.text), "url": url(l.url), "label": tok(l.label) if l.label else None}
                      for l in s.links],
        })
    intro = _tokenize_markdown(table, issue.intro) if issue.intro else ""
    # A shared link's card needs an absolute image address, whatever the published page uses.
    first = issue.hero or next((s.image for s in issue.sections if s.image is not None), None)
    share = None if first is None else {"src": media.image_url(settings, slug, first.src), "alt": tok(first.alt)}
    d = issue.date
    return View({
        "settings": settings,
        "brand": settings.brand,
        "light": palette.light(settings.brand),
        "dark": palette.dark(settings.brand),
        "hero": image(issue.hero),
        "subject": tok(issue.subject),
        "preheader": tok(issue.preheader) if issue.preheader else "",
        "title": tok(issue.title) if issue.title else settings.name,
        "date": d,
        "date_label": f"{d.day} {d:%B %Y}",
        "intro_html": Markup(markdown_html.to_html(intro)) if intro else "",
        "intro_text": markdown_html.to_text(intro) if intro else "",
        "sections": sections,
        "slug": slug,
        "web_url": settings.web_url(slug),
        "archive_url": settings.web_base + "/" if archive_url is None else archive_url,
        "feed_url": f"{settings.web_base}/{FEED}" if feed_url is None else feed_url,
        "signup_url": f"{settings.web.base}/subscribe" if settings.web.base else None,
        "share_image": share,
    })


def _tokenize_markdown(table: FieldTable, text: str) -> str:
    """Markdown with its merge fields as tokens, those deciding a link's or image's address marked."""
    text = table.tokenize(text)
    for target in markdown_html.link_targets(text):
        table.mark_url(target)
    return text


def render(paths: tuple[str, ...], name: str, view: View, **extra: Any) -> str:
    """Render one template; a template error names the template and the line."""
    try:
        template = environment(paths).get_template(name)
        return template.render(**view.context, **extra)
    except jinja2.TemplateSyntaxError as exc:
        raise NewsletterError(f"template error: {exc.message}", path=exc.filename or name,
                              line=exc.lineno) from None
    except jinja2.TemplateNotFound as exc:
        raise NewsletterError(f"template '{exc.name}' not found", path=None,
                              hint=f"looked in {', '.join(paths)}") from None
    except jinja2.TemplateError as exc:
        file, line = _template_frame(exc, name)
        raise NewsletterError(f"template error: {exc}", path=file, line=line) from None


def _template_frame(exc: BaseException, name: str) -> tuple[str, int | None]:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return frame.filename, frame.lineno
    return name, None
