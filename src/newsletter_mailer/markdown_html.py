"""Markdown for issue content: CommonMark through markdown-it-py, raw HTML off.

The same token stream gives the HTML for the email and web copy and the plain
text for the text part, so the two never drift apart.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator

from markdown_it import MarkdownIt

from newsletter_mailer import mergefields

_ALLOWED = mergefields.SCHEMES


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False})
    md.validateLink = lambda url: url.strip().lower().startswith(_ALLOWED)  # type: ignore[method-assign]
    return md


@lru_cache(maxsize=1)
def _md_any_link() -> MarkdownIt:
    """A parser that keeps every link, so the check below sees the ones _md() would drop."""
    md = MarkdownIt("commonmark", {"html": False})
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md


def _targets(md: MarkdownIt, text: str) -> Iterator[str]:
    """Every link's href and image's src in text, as md parses it."""
    for block in md.parse(text):
        for tok in block.children or ():
            url = tok.attrGet("href") if tok.type == "link_open" else tok.attrGet("src") if tok.type == "image" else None
            if url is not None:
                yield str(url)


def check_markdown_links(text: str) -> None:
    """Raise ValueError for a Markdown link or image that is not http(s) or mailto."""
    for url in _targets(_md_any_link(), mergefields.MERGE_RE.sub("x", text)):
        if not url.strip().lower().startswith(_ALLOWED):
            raise ValueError(f"link '{url[:60]}' is not an http(s) or mailto link")


def link_targets(text: str) -> Iterator[str]:
    """The href and src attributes to_html writes for text: where its merge fields stand in URLs."""
    return _targets(_md(), text)


def to_html(text: str) -> str:
    return _md().render(text)


def to_text(text: str) -> str:
    """Plain text as a person would type it: paragraphs, bullets, and each link's URL shown."""
    out: list[str] = []
    prefix: list[str] = []  # list markers for nested lists
    counters: list[int] = []
    item_start = False
    for tok in _md().parse(text):
        t = tok.type
        if t == "bullet_list_open":
            counters.append(0)
            prefix.append("•")
        elif t == "ordered_list_open":
            counters.append(int(tok.attrGet("start") or 1) - 1)
            prefix.append("#")
        elif t in ("bullet_list_close", "ordered_list_close"):
            prefix.pop()
            counters.pop()
            if not prefix:
                out.append("")
        elif t == "list_item_open":
            counters[-1] += 1
            item_start = True
        elif t == "inline":
            body = _inline(tok.children or [])
            if prefix:
                indent = "  " * (len(prefix) - 1)
                marker = "•" if prefix[-1] == "•" else f"{counters[-1]}."
                lead = f"{indent}  {marker} " if item_start else indent + "    "
                out.append(lead + body.replace("\n", "\n" + indent + "    "))
                item_start = False
            else:
                out.append(body)
                out.append("")
        elif t in ("fence", "code_block"):
            out.append(tok.content.rstrip("\n"))
            out.append("")
        elif t == "hr":
            out.append("----------")
            out.append("")
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)


def _inline(children) -> str:
    parts: list[str] = []
    href: list[str | None] = []
    start: list[int] = []
    for c in children:
        if c.type in ("text", "code_inline"):
            parts.append(c.content)
        elif c.type == "softbreak":  # a line break in the YAML: the text part re-wraps the paragraph
            parts.append(" ")
        elif c.type == "hardbreak":
            parts.append("\n")
        elif c.type == "image":
            parts.append(c.content or "")
        elif c.type == "link_open":
            href.append(c.attrGet("href"))
            start.append(len(parts))
        elif c.type == "link_close":
            url = href.pop()
            text = "".join(parts[start.pop():])
            shown = url[len("mailto:"):] if url and url.startswith("mailto:") else url
            if url and text.strip() != shown:
                parts.append(f" ({shown})")
    return "".join(parts)
