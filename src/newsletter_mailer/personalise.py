"""Per-recipient filling: the hot path (step 5).

A finished document (subject, inlined HTML, text) is split once on its merge-field
tokens into literal parts; per recipient the values are slotted in and joined.
Nothing is re-rendered, re-compiled or re-inlined per recipient, and subscriber
values are data, never templates: `{{ 7*7 }}` in a name arrives as those characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from newsletter_mailer.mergefields import Field
from newsletter_mailer.providers.base import Recipient
from newsletter_mailer.validators import link_problem

# Fields every recipient has, whatever the list's columns.
BUILTIN_FIELDS = frozenset({"email", "name", "unsubscribe_url", "web_url"})
# Of those, the ones whose values this project makes (never a reader's data).
OWN_FIELDS = frozenset({"unsubscribe_url", "web_url"})
# [tracking]: the reader's half of every tracked link (tracked_links.py), one value a message.
READER_FIELD = "tracked_reader"
LINK_FIELD = "tracked_link_"  # + the link's id: its value is fixed per send, never a reader's column


@dataclass(frozen=True)
class Template:
    """Literal parts with slots between them; slots[i] is the field index of the i-th gap."""

    parts: tuple[str, ...]
    slots: tuple[int, ...]

    @classmethod
    def split(cls, text: str, token_re: re.Pattern[str]) -> Template:
        pieces = token_re.split(text)
        return cls(tuple(pieces[0::2]), tuple(int(i) for i in pieces[1::2]))

    def fill(self, values: Sequence[str]) -> str:
        parts = self.parts
        out = [parts[0]]
        for i, slot in enumerate(self.slots, 1):
            out.append(values[slot])
            out.append(parts[i])
        return "".join(out)

    @property
    def used(self) -> frozenset[int]:
        return frozenset(self.slots)


class Filler:
    """Turns one recipient into the list of raw values, in field order, once per recipient."""

    def __init__(self, fields: Sequence[Field], web_url: str):
        self.fields = tuple(fields)
        self.web_url = web_url
        # Fields whose value decides where a link goes: only these are checked per recipient.
        self.links = tuple(i for i, f in enumerate(self.fields) if f.url and f.name not in OWN_FIELDS)
        # A tracked link's field is its default (the link as written; tracked_links.bake writes the
        # tracked form into the parts at send time): copied, not looked at per recipient.
        self._fixed = [f.default or "" for f in self.fields]
        self._live = tuple((i, f) for i, f in enumerate(self.fields) if not f.name.startswith(LINK_FIELD))

    def missing(self, columns: frozenset[str]) -> list[str]:
        """Fields the list cannot fill and that have no default: an error before sending."""
        return sorted({f.name for f in self.fields
                       if f.default is None and f.name not in BUILTIN_FIELDS and f.name not in columns})

    def values(self, email: str, name: str, extra: Mapping[str, str], unsubscribe_url: str,
               tracked: str = "") -> list[str]:
        """tracked: the reader's sealed half of every tracked link (tracked_links.py), when clicks are counted."""
        out = self._fixed.copy()
        for i, f in self._live:
            n = f.name
            if n == "email":
                v = email
            elif n == "name":
                v = name
            elif n == "unsubscribe_url":
                v = unsubscribe_url
            elif n == "web_url":
                v = self.web_url
            elif n == READER_FIELD:
                v = tracked
            else:
                v = extra.get(n, "")
            out[i] = v if v else (f.default or "")
        for i in self.links:  # not a link (javascript:, data:, //host): the default, else nothing
            if link_problem(out[i]):
                out[i] = self.fields[i].default or ""
        return out

    def unsafe_link(self, values: Sequence[str]) -> str | None:
        """The field (column) whose value, in values(), is no link and has no default to stand in
        for it: that recipient is skipped before sending rather than sent a broken or unsafe link."""
        return next((self.fields[i].name for i in self.links
                     if self.fields[i].default is None and link_problem(values[i])), None)

    def defaults(self, unsubscribe_url: str = "") -> list[str]:
        return self.values("", "", {}, unsubscribe_url)


def make_recipient(filler: Filler, unsubscribe_url: str, email: str, name: str, fields: Mapping[str, str],
                   message_id: str | None = None, token: str | None = None, tracked: str = "") -> Recipient:
    """The per-recipient path: raw merge values in field order, with the personal unsubscribe URL
    (and the reader's half of the tracked links)."""
    return Recipient(email, name, filler.values(email, name, fields, unsubscribe_url, tracked), message_id, token)
