"""Compose an issue once: load → render → compile → inline → split for personalising.

The result holds everything a send needs; per recipient only values are filled in.
"""

from __future__ import annotations

import html as htmlmod
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from newsletter_mailer import render, tracked_links
from newsletter_mailer.inline import inline_css
from newsletter_mailer.media import check_local_images
from newsletter_mailer.mergefields import Field, FieldTable
from newsletter_mailer.mjml_compile import compile_mjml
from newsletter_mailer.personalise import Filler, Template
from newsletter_mailer.schema import Issue, slug_of
from newsletter_mailer.settings import Settings
from newsletter_mailer.sourcefile import load_yaml_model

UNSUBSCRIBE = "unsubscribe_url"


def load_issue(path: Path) -> Issue:
    return load_yaml_model(path, Issue)


@dataclass(frozen=True)
class Composed:
    slug: str
    settings: Settings
    fields: tuple[Field, ...]
    subject: Template
    preheader: Template
    html: Template
    text: Template
    web_html: str
    placeholders: tuple[str, ...]
    issue: Issue = field(compare=False)  # as written: the reader checks name its fields
    source: Path | None = field(default=None, compare=False)  # the issue file: its local images sit beside it
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    variant: str | None = field(default=None, compare=False)  # whose sections (variants.py); None: the whole issue
    # [tracking] clicks: field tracked_link_<i + 1> is tracked_links[i]; in the whole issue that is also its
    # link id (an audience's edition numbers its own: tracked_links.SendLinks maps them to the issue's ids)
    tracked_links: tuple[str, ...] = ()
    subject_a: Template | None = None  # a subject test (send.py): the issue's own subject; `subject` is one slot

    @property
    def web_url(self) -> str:
        return self.settings.web_url(self.slug)

    def filler(self) -> Filler:
        """Built once per composed issue: the per-recipient path asks for it every time."""
        f = self.__dict__.get("_filler")
        if f is None:
            f = Filler(self.fields, self.web_url)
            object.__setattr__(self, "_filler", f)
        return f

    def email_html_with_placeholders(self) -> str:
        """email.html as written to disk: merge fields shown as the user wrote them."""
        return self.html.fill([htmlmod.escape(p) for p in self.placeholders])

    def text_with_placeholders(self) -> str:
        return self.text.fill(self.placeholders)

    def sample(self, email: str = "reader@example.org", name: str = "") -> tuple[str, str, str, str]:
        """(subject, preheader, html, text) for one made-up reader with default values."""
        values = self.filler().values(email, name, {}, sample_unsubscribe(self.settings, email, self.slug))
        esc = [htmlmod.escape(v) for v in values]
        return (self.subject.fill(values), self.preheader.fill(values), self.html.fill(esc), self.text.fill(values))


PREVIEW_KEY = b"\0" * 32  # seals the preview's tokens: the link has the readers' form and opens nothing


def sample_unsubscribe(settings: Settings, email: str, slug: str) -> str:
    """The unsubscribe link in the form readers get it (the settings decide which), for the
    preview: the app's /u/<token>, the settings' unsubscribe_url filled, or SendGrid's own page.
    Its token is sealed with a key of zeros, so it has the real shape and unsubscribes nobody."""
    from newsletter_mailer import tokens, unsubscribe
    from newsletter_mailer.listid import stable_id
    from newsletter_mailer.message import unsubscribe_link

    if settings.delivery.provider == "sendgrid" and settings.delivery.sendgrid.asm_group_id is not None:
        return "[SendGrid's unsubscribe link for this reader]"
    if settings.unsubscribe_url is not None:
        return unsubscribe_link(settings.unsubscribe_url, email, unsubscribe.token(PREVIEW_KEY, email))
    if settings.web.base is not None:
        token = tokens.make_unsubscribe(PREVIEW_KEY, stable_id(settings.list_id_header), email, slug)
        return f"{settings.web.base}/u/{token}"
    return "[no unsubscribe link: set [web] base_url]"


def compose(issue_path: Path, settings: Settings, settings_dir: Path | None) -> Composed:
    t = {}
    t0 = time.perf_counter()
    issue = load_issue(issue_path)
    t["load"] = time.perf_counter() - t0
    return compose_issue(issue, issue_path, settings, settings_dir, t)


@dataclass(frozen=True)
class _Rendering:
    """An issue on its way through the templates: the one path compose_issue and web_copy share
    (slug, image check, template search path, merge-field tokens, view, render, compile, fill)."""

    slug: str
    settings: Settings
    paths: tuple[str, ...]
    table: FieldTable
    view: render.View

    @classmethod
    def start(cls, issue: Issue, issue_path: Path, settings: Settings, settings_dir: Path | None,
              **links: Any) -> _Rendering:
        slug = slug_of(issue_path)
        check_local_images(issue, issue_path)
        table = FieldTable()
        view = render.build_view(issue, settings, slug, table, **links)
        return cls(slug, settings, tuple(render.search_path(settings_dir)), table, view)

    def render(self, name: str, *, unsubscribe_url: str = "") -> str:
        return render.render(self.paths, name, self.view, unsubscribe_url=unsubscribe_url)

    def compile(self, mjml: str) -> str:
        # An MJML error names the template file in use (the user's override, or the built-in one).
        template = render.environment(self.paths).get_template(render.EMAIL_TEMPLATE)
        return compile_mjml(mjml, template.filename or render.EMAIL_TEMPLATE)

    def split(self, text: str) -> Template:
        return Template.split(text, self.table.token_re)

    def defaults(self) -> list[str]:
        """Each merge field's default: what the web copy, read by anyone, shows."""
        return Filler(tuple(self.table.fields), self.settings.web_url(self.slug)).defaults()

    def web_page(self, rendered: str, defaults: list[str]) -> str:
        return self.split(rendered).fill([htmlmod.escape(v) for v in defaults])


def for_web(issue: Issue) -> Issue:
    """The issue as its public web copy shows it: every section but those marked web: false."""
    if all(s.web for s in issue.sections):
        return issue
    return issue.model_copy(update={"sections": [s for s in issue.sections if s.web]})


def compose_issue(issue: Issue, issue_path: Path, settings: Settings, settings_dir: Path | None,
                  t: dict[str, float] | None = None, *, web_html: str | None = None,
                  variant: str | None = None) -> Composed:
    """web_html given (a variant of an issue whose web copy is made): the web template is not rendered."""
    t = {} if t is None else t
    t0 = time.perf_counter()
    r = _Rendering.start(issue, issue_path, settings, settings_dir)
    unsub = r.table.token(UNSUBSCRIBE)
    mjml_email = r.render(render.EMAIL_TEMPLATE, unsubscribe_url=unsub)
    if web_html is None:
        web = for_web(issue)
        web_html = (r.web_page(r.render(render.WEB_TEMPLATE), r.defaults()) if web is issue else
                    web_copy(web, issue_path, settings, settings_dir).page)
    text = r.render(render.TEXT_TEMPLATE, unsubscribe_url=unsub)
    t["render"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    email_html = r.compile(mjml_email)
    t["compile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inlined = inline_css(email_html)
    t["inline"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tracked = _track(r, inlined, text)
    inlined, text = tracked.html, tracked.text
    fields = tuple(r.table.fields)
    composed = Composed(
        slug=r.slug, settings=settings, fields=fields,
        subject=r.split(r.view.context["subject"]),
        preheader=r.split(r.view.context["preheader"]),
        html=r.split(inlined),
        text=r.split(re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n"),
        web_html=web_html,
        placeholders=tuple(r.table.placeholder(i) for i in range(len(fields))),
        timings=t,
        issue=issue,
        source=issue_path,
        variant=variant,
        tracked_links=tracked.links,
    )
    t["split"] = time.perf_counter() - t0
    return composed


def _track(r: _Rendering, email_html: str, text: str) -> tracked_links.Rewritten:
    """[tracking] clicks/opens: the email's links (not the web copy's) in per-reader slots."""
    s = r.settings
    if not (s.tracking.clicks or s.tracking.opens):
        return tracked_links.Rewritten(email_html, text, ())
    if not s.tracking.clicks:  # the pixel alone: no link rewritten
        return tracked_links.rewrite(email_html, text, r.table, ("",), pixel=True)
    return tracked_links.rewrite(email_html, text, r.table, _untracked(s, r.slug), pixel=s.tracking.opens)


def _untracked(s: Settings, slug: str) -> list[str]:
    """Prefixes of the links never counted: the web copy and the app's own pages."""
    return [s.web_url(slug)] + [f"{s.web.base}/{page}" for page in tracked_links.APP_PAGES]


def links_as_sent(composed: Composed) -> tuple[str, ...]:
    """The links [tracking] would count, with the same ids (link i + 1 is [i]), of an issue composed
    without it: SendGrid tracks them itself and its click events name them (web/webhook.py)."""
    table = FieldTable()  # each slot becomes a token again, so a link holding a merge field is left out

    def joined(t: Template) -> str:
        return "".join(part + (table.token(f"slot{t.slots[i]}") if i < len(t.slots) else "")
                       for i, part in enumerate(t.parts))
    return tracked_links.rewrite(joined(composed.html), joined(composed.text), table,
                                 _untracked(composed.settings, composed.slug)).links


@dataclass(frozen=True)
class WebCopy:
    page: str
    subject: str  # merge fields filled with their defaults; plain text
    preheader: str


def web_copy(issue: Issue, issue_path: Path, settings: Settings, settings_dir: Path | None, *,
             archive_url: str | None = None, feed_url: str | None = None,
             local_image: Callable[[str], str] | None = None) -> WebCopy:
    """The web copy alone (no email, text or MJML), with the links build_view is given."""
    r = _Rendering.start(for_web(issue), issue_path, settings, settings_dir, archive_url=archive_url,
                         feed_url=feed_url, local_image=local_image)
    page = r.render(render.WEB_TEMPLATE)
    values = r.defaults()
    return WebCopy(r.web_page(page, values), r.split(r.view.context["subject"]).fill(values),
                   r.split(r.view.context["preheader"]).fill(values))
