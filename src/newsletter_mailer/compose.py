"""Compose an issue once: load → render → compile → inline → split for personalising.

The result holds everything a send needs; per recipient only values are filled in.
"""

from __future__ import annotations

import html as htmlmod
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from newsletter_mailer import render
from newsletter_mailer.mjml_compile import compile_mjml
from newsletter_mailer.inline import inline_css
from newsletter_mailer.media import check_local_images
from newsletter_mailer.mergefields import Field, FieldTable
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
    path: Path
    issue: Issue
    settings: Settings
    fields: tuple[Field, ...]
    subject: Template
    preheader: Template
    html: Template
    text: Template
    web_html: str
    placeholders: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict, compare=False)

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
        values = self.filler().values(email, name, {}, self.settings.web_base + "/unsubscribe")
        esc = [htmlmod.escape(v) for v in values]
        return (self.subject.fill(values), self.preheader.fill(values), self.html.fill(esc), self.text.fill(values))


def compose(issue_path: Path, settings: Settings, settings_dir: Path | None) -> Composed:
    t = {}
    t0 = time.perf_counter()
    issue = load_issue(issue_path)
    t["load"] = time.perf_counter() - t0
    return compose_issue(issue, issue_path, settings, settings_dir, t)


def compose_issue(issue: Issue, issue_path: Path, settings: Settings, settings_dir: Path | None,
                  t: dict[str, float] | None = None) -> Composed:
    t = {} if t is None else t
    slug = slug_of(issue_path)
    check_local_images(issue, issue_path)
    paths = tuple(render.search_path(settings_dir))
    table = FieldTable()
    t0 = time.perf_counter()
    view = render.build_view(issue, settings, slug, table)
    unsub = table.token(UNSUBSCRIBE)
    mjml_email = render.render(paths, render.EMAIL_TEMPLATE, view, web=False, unsubscribe_url=unsub)
    mjml_web = render.render(paths, render.EMAIL_TEMPLATE, view, web=True, unsubscribe_url="")
    text = render.render(paths, render.TEXT_TEMPLATE, view, web=False, unsubscribe_url=unsub)
    t["render"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # An MJML error names the template file in use (the user's override, or the built-in one).
    mjml_file = render.environment(paths).get_template(render.EMAIL_TEMPLATE).filename or render.EMAIL_TEMPLATE
    email_html = compile_mjml(mjml_email, mjml_file)
    web_html = compile_mjml(mjml_web, mjml_file)
    t["compile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inlined = inline_css(email_html)
    t["inline"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rx = table.token_re
    fields = tuple(table.fields)
    filler = Filler(fields, settings.web_url(slug))
    web_values = [htmlmod.escape(v) for v in filler.defaults()]
    composed = Composed(
        slug=slug, path=issue_path, issue=issue, settings=settings, fields=fields,
        subject=Template.split(view.context["subject"], rx),
        preheader=Template.split(view.context["preheader"], rx),
        html=Template.split(inlined, rx),
        text=Template.split(re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n", rx),
        web_html=Template.split(web_html, rx).fill(web_values),
        placeholders=tuple(table.placeholder(i) for i in range(len(fields))),
        timings=t,
    )
    t["split"] = time.perf_counter() - t0
    return composed
