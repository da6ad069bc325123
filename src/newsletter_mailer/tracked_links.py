"""[tracking] clicks at compose time: each link of the issue becomes two merge slots.

The email's HTML and text are rewritten once: every http(s) link (not the unsubscribe, web-copy or
`mailto:` links, nor one of the app's own pages or one that holds a merge field) gets an id, 1, 2, …
in the order the links first appear, and its address becomes `{{ tracked_link_<id> }}{{ tracked_reader }}`.
At send time the first, the same for every reader (`<base_url>/c/<link code>.<issue>.`), is baked into
the literal parts once (`bake`), and the second is the reader's half (tokens.py: a keyed pseudonym, or
with [tracking] per_reader the sealed address), one merge value used by every link: compose once stays
the rule, and a message's links cost two short hashes (per_reader: one seal). The defaults
are the link itself and nothing, so previews, test sends and email.html show the links as written.

An issue with `for:` sections sends each audience an edition composed on its own (variants.py), whose
links are numbered in its own order: SendLinks bakes each with the id its URL has in the whole issue,
so a link counts against one id whoever got it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from newsletter_mailer import tokens
from newsletter_mailer.mergefields import FieldTable
from newsletter_mailer.personalise import LINK_FIELD, READER_FIELD, Template

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.compose import Composed

APP_PAGES = ("u/", "c/", "o/", "subscribe", "confirm/")  # the app's own pages (web/application.py): never tracked
OPEN_LINK = 0  # the open pixel counts as link 0: its own totals, never a reader's click on a link
_BLANK = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"  # preview pixel
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)(")', re.IGNORECASE)


@dataclass(frozen=True)
class Rewritten:
    html: str
    text: str
    links: tuple[str, ...]  # links[i] has id i + 1


def _trackable(url: str, table: FieldTable, own: Sequence[str]) -> bool:
    low = url.lower()
    return (low.startswith(("http://", "https://")) and table.token_re.search(url) is None
            and not any(low.startswith(o.lower()) for o in own))


def rewrite(email_html: str, text: str, table: FieldTable, own: Sequence[str], *, pixel: bool = False
            ) -> Rewritten:
    """email_html and text with every trackable link in slots; `own` are prefixes never tracked
    (the web copy, the app's base URL; "" tracks nothing). pixel: an open-tracking image too (opens = true)."""
    ids: dict[str, int] = {}
    reader = table.token(READER_FIELD, "")

    def slot(url: str) -> str:
        i = ids.setdefault(url, len(ids) + 1)
        return table.token(f"{LINK_FIELD}{i}", url) + reader

    def href(m: re.Match[str]) -> str:
        url = html.unescape(m.group(2)).strip()
        if not _trackable(url, table, own):
            return m.group(0)
        return m.group(1) + slot(url) + m.group(3)

    out_html = _HREF.sub(href, email_html)
    if ids:  # the text part: the same links, longest first so no link stands for the start of another
        pattern = re.compile("|".join(re.escape(u) for u in sorted(ids, key=len, reverse=True))
                             + r"""(?![^\s<>"')\]])""")
        text = pattern.sub(lambda m: slot(m.group(0)), text)
    if pixel:
        img = (f'<img src="{table.token(LINK_FIELD + str(OPEN_LINK), _BLANK)}{reader}" width="1" height="1" '
                 'alt="" style="display:block;height:1px;width:1px;border:0">')
        out_html = re.sub(r"</body>", lambda m: img + m.group(0), out_html, count=1, flags=re.IGNORECASE)
    return Rewritten(out_html, text, tuple(ids))


def constants(secret: tokens.Secrets, list_id: str, issue: str, links: Sequence[str], base: str,
              opens: bool, ids: Sequence[int] | None = None, *, per_reader: bool = False) -> dict[str, str]:
    """The per-send values of the link fields, the same for every reader: `<base>/c/<code>.<issue>.`
    for each link, the reader's pseudonym to follow; with per_reader `<base>/c/<code>.`, the reader's
    sealed address to follow (tokens.py). links[i] fills field `tracked_link_<i + 1>`; its link id is
    ids[i] (default i + 1: the whole issue's)."""
    tail = "." if per_reader else f".{issue}."
    ids = range(1, len(links) + 1) if ids is None else ids
    k = len(links)  # the message's own count of tracked links, for the scanner rule (web/clicks.py)
    out = {f"{LINK_FIELD}{n}": f"{base}/c/{tokens.make_link_code(secret, list_id, issue, i, url, k)}{tail}"
           for n, (i, url) in enumerate(zip(ids, links, strict=True), 1)}
    if opens:
        out[f"{LINK_FIELD}{OPEN_LINK}"] = f"{base}/o/{tokens.make_link_code(secret, list_id, issue, OPEN_LINK, '')}{tail}"
    return out


class SendLinks:
    """One send's link ids: the whole issue's, 1 … n in its order, then any URL only an edition has
    (an override template's own link), appended: a URL has one id in the send, so it is stored and
    counted once whichever audience's edition carried it. `stored`: the issue's links already in the
    state, so an appended id keeps its number when the send resumes."""

    def __init__(self, secret: tokens.Secrets, list_id: str, issue: str, base: str, opens: bool,
                 links: Sequence[str], stored: Iterable[tuple[int, str]] = (), *, per_reader: bool = False):
        self.secret, self.list_id, self.issue, self.base, self.opens = secret, list_id, issue, base, opens
        self.per_reader = per_reader
        self.links: list[str] = list(links)  # link id i + 1 is links[i]: what store_links keeps
        self._ids = {url: i for i, url in enumerate(self.links, 1)}
        for i, url in sorted(stored):
            if i == len(self.links) + 1 and url not in self._ids:
                self._id(url)

    def _id(self, url: str) -> int:
        i = self._ids.get(url)
        if i is None:
            self.links.append(url)
            i = self._ids[url] = len(self.links)
        return i

    def bake(self, composed: Composed) -> Composed:
        """The issue, or one audience's edition of it, with each link's per-send half written in (bake)."""
        ids = [self._id(url) for url in composed.tracked_links]
        return bake(composed, constants(self.secret, self.list_id, self.issue, composed.tracked_links, self.base,
                                        self.opens, ids, per_reader=self.per_reader))


def bake(composed: Composed, constants: Mapping[str, str]) -> Composed:
    """The composed issue with each link field's per-send value written into the HTML and text once:
    per reader only the reader's token is left to fill (benchmarks/RESULTS.md: tracked vs untracked)."""
    values = {i: constants[f.name] for i, f in enumerate(composed.fields) if f.name in constants}
    return replace(composed, html=_bake(composed.html, {i: html.escape(v) for i, v in values.items()}),
                   text=_bake(composed.text, values))


def _bake(t: Template, values: Mapping[int, str]) -> Template:
    parts, slots = [t.parts[0]], []
    for k, slot in enumerate(t.slots, 1):
        if slot in values:
            parts[-1] += values[slot] + t.parts[k]
        else:
            slots.append(slot)
            parts.append(t.parts[k])
    return Template(tuple(parts), tuple(slots))

