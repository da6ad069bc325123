"""Checks for readers (issue 13): heading order, link words, alt text, image-only sections,
all-caps headings and the inbox line. Each names the section and the issue field to change.

They read the issue as written (merge fields left as typed) and, for heading order, the email as
rendered: a Markdown heading in a body can skip a level the template never would.
"""

from __future__ import annotations

import re

import lxml.html

from newsletter_mailer import markdown_html
from newsletter_mailer.checks.result import Check
from newsletter_mailer.schema import Issue

VAGUE = {"click here", "here", "read more", "more", "link", "this link", "click", "this", "learn more",
         "find out more", "more info", "go"}
_FILE_NAME = re.compile(r"\.(png|jpe?g|gif|webp|svg|bmp|tiff?|avif|heic)$", re.I)
_REDUNDANT = ("image of", "picture of", "photo of", "graphic of")
_URL = re.compile(r"^(https?://|www\.)\S+$", re.I)
CAPS_LETTERS = 12  # an all-caps heading this long reads as shouting and is hard to scan
MIN_WORDS = 3  # fewer words of body text beside an image: the section is only the image


def _where(i: int | None, field: str) -> str:
    return f"section {i + 1} ({field})" if i is not None else field


def _warn(name: str, i: int | None, field: str, text: str, level: str = "warning") -> Check:
    return Check(level, f"{_where(i, field)}: {text}", name, None if i is None else i + 1, field)


def _link_texts(issue: Issue):
    """(section index or None, field, words, href) of every link a reader sees."""
    def body(i, field, md):
        for a in lxml.html.fragment_fromstring(markdown_html.to_html(md), create_parent=True).iter("a"):
            yield i, field, a.text_content(), a.get("href") or ""
    if issue.intro:
        yield from body(None, "intro", issue.intro)
    for i, s in enumerate(issue.sections):
        yield from body(i, f"sections[{i}].body", s.body)
        for j, l in enumerate(s.links):
            yield i, f"sections[{i}].links[{j}].text", l.text, l.url
        if s.button:
            yield i, f"sections[{i}].button.label", s.button.label, s.button.url


def link_text_checks(issue: Issue) -> list[Check]:
    out = []
    for i, field, words, href in _link_texts(issue):
        said = " ".join(words.split()).strip(" .:!…→»").casefold()
        if said in VAGUE:
            out.append(_warn("link-text", i, field, f"link text '{words.strip()}' says nothing out of context: "
                                                    "name where the link goes"))
        elif _URL.match(said) or (href and said == href.casefold()):
            out.append(_warn("link-text", i, field, f"link text is a bare address ({words.strip()[:60]}): "
                                                    "screen readers spell it out; name where it goes"))
    return out or [Check("ok", "every link's words say where it goes", "link-text")]


def _images(issue: Issue):
    if issue.hero:
        yield None, "hero", issue.hero
    for i, s in enumerate(issue.sections):
        if s.image:
            yield i, f"sections[{i}].image", s.image


def alt_text_checks(issue: Issue) -> list[Check]:
    out = []
    for i, field, img in _images(issue):
        alt = " ".join(img.alt.split())
        if not alt and img.href:
            out.append(_warn("alt-text", i, f"{field}.alt", "the image is a link but has no alt text: "
                                                            "say where it goes", "error"))
        elif _FILE_NAME.search(alt):
            out.append(_warn("alt-text", i, f"{field}.alt", f"alt text '{alt}' is a file name: "
                                                            "say what the image shows"))
        elif alt.casefold().startswith(_REDUNDANT):
            out.append(_warn("alt-text", i, f"{field}.alt", f"alt text '{alt[:40]}' starts with "
                                                            "'image of': screen readers already say so"))
    return out or [Check("ok", "alt texts describe their images", "alt-text")]


def section_checks(issue: Issue) -> list[Check]:
    """Image-only sections and long all-caps headings (the title too)."""
    out = []
    headings = [(None, "title", issue.title or "")] + [(i, f"sections[{i}].heading", s.heading)
                                                       for i, s in enumerate(issue.sections)]
    for i, field, h in headings:
        cased = [c for c in h if c.upper() != c.lower()]
        if len(cased) >= CAPS_LETTERS and all(c.isupper() for c in cased):
            out.append(_warn("all-caps", i, field, "a long heading in capitals is hard to read: "
                                                   "use sentence case"))
    for i, s in enumerate(issue.sections):
        if s.image and len(re.findall(r"\w+", markdown_html.to_text(s.body))) < MIN_WORDS:
            out.append(_warn("image-only", i, f"sections[{i}].body", "the section is only an image: readers "
                                                                      "with images off see nothing; add text"))
    return out or [Check("ok", "no image-only sections or all-caps headings", "sections")]


def heading_order_checks(html: str) -> list[Check]:
    """One h1 first, then no level skipped going down (h2 → h4), in the email as rendered."""
    doc = lxml.html.fromstring(html)
    out, previous, section = [], 0, None
    for h in doc.iter("h1", "h2", "h3", "h4", "h5", "h6"):
        level = int(h.tag[1])
        if "nl-heading" in (h.get("class") or ""):
            section = 0 if section is None else section + 1
        if level > previous + 1:
            field = "heading" if section is None else f"sections[{section}].body"
            what = f"h{level} after h{previous}" if previous else f"the first heading is h{level}"
            right = previous + 1  # a Markdown body's # makes an h1, ## an h2, and so on
            out.append(_warn("headings", section, field, f"heading '{h.text_content().strip()[:40]}' skips a "
                                                         f"level ({what}): use {'#' * right} (an h{right}) here"))
        previous = level
    return out or [Check("ok", "headings in order", "headings")]


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def preheader_repeat_check(subject: str, preheader: str) -> list[Check]:
    s, p = _words(subject), _words(preheader)
    if p and (p == s or p.startswith(s) or s.startswith(p)):
        return [_warn("inbox", None, "preheader", "the preheader repeats the subject: inboxes show both side "
                                                  "by side, so say something new")]
    return []
