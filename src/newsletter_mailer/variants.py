"""An issue's variants: the distinct sets of sections its readers get (a section's `for:`).

A reader's variant is decided at plan time from their tags and fields, cached per distinct
(tags, fields the conditions use), so the per-reader cost is one dict look-up. Each variant is
composed once, on first use (Editions), then personalised as any issue; an issue without
conditions has one variant, "everyone": the issue composed once, as before.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from newsletter_mailer.compose import Composed, compose_issue
from newsletter_mailer.conditions import For, fields_of, label, matches, tags_of, values_of
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.schema import Issue
from newsletter_mailer.subscribers import Subscriber

EVERYONE = "everyone"
EVERYONE_ELSE = "everyone else"
MAX_POSSIBLE = 4096   # reader kinds tried when no list says which exist
_CACHE_MAX = 100_000  # a condition on email makes every reader distinct: the cache stops growing


@dataclass(frozen=True)
class Variant:
    name: str                   # from the conditions it meets: "parents", "schools + north", "everyone else"
    sections: tuple[int, ...]   # the issue's sections (0-based) its readers get
    intro: bool                 # whether they get the intro


class Audiences:
    """The issue's conditions, evaluated per reader; variants are named as they are first met."""

    def __init__(self, issue: Issue):
        self.issue = issue
        self.conditional = issue.intro_for is not None or any(s.for_ is not None for s in issue.sections)
        self.fields = tuple(sorted(set().union(*(fields_of(c) for _, c in self.located()))))
        self._personal = bool({"email", "name"} & set(self.fields))
        self._by_reader: dict[tuple, Variant] = {}
        self._by_key: dict[tuple, Variant] = {}
        self._names: set[str] = set()
        self._all = self.everyone()

    def located(self) -> list[tuple[tuple, For]]:
        """(where in the issue file, condition) of every for:."""
        out = [(("intro_for",), self.issue.intro_for)] if self.issue.intro_for is not None else []
        return out + [(("sections", i, "for"), s.for_) for i, s in enumerate(self.issue.sections) if s.for_ is not None]

    def everyone(self) -> Variant:
        """Every section: the only variant of an issue without conditions."""
        return self._variant(self.issue.intro is not None, tuple(range(len(self.issue.sections))))

    def of(self, sub: Subscriber) -> Variant:
        """The reader's variant (the hot path: a look-up once their kind was seen)."""
        if not self.conditional:
            return self._all
        fields = sub.fields
        if self._personal:
            fields = {**fields, "email": sub.email, "name": sub.name}
        k = (sub.tags, tuple(fields.get(f, "") for f in self.fields))
        v = self._by_reader.get(k)
        if v is None:
            v = self.decide(sub.tags, fields)
            if len(self._by_reader) < _CACHE_MAX:
                self._by_reader[k] = v
        return v

    def decide(self, tags: frozenset[str], fields: Mapping[str, str]) -> Variant:
        """The straightforward evaluation: each section whose condition holds (or has none)."""
        issue = self.issue
        intro = issue.intro is not None and (issue.intro_for is None or matches(issue.intro_for, tags, fields))
        return self._variant(intro, tuple(i for i, s in enumerate(issue.sections)
                                          if s.for_ is None or matches(s.for_, tags, fields)))

    def _variant(self, intro: bool, sections: tuple[int, ...]) -> Variant:
        key = (intro, sections)
        v = self._by_key.get(key)
        if v is None:
            v = self._by_key[key] = Variant(self._name(intro, sections), sections, intro)
        return v

    def _name(self, intro: bool, sections: tuple[int, ...]) -> str:
        if not self.conditional:
            return EVERYONE
        conds = ([self.issue.intro_for] if intro and self.issue.intro_for is not None else []) + [
            self.issue.sections[i].for_ for i in sections if self.issue.sections[i].for_ is not None]
        name = ", ".join(dict.fromkeys(map(label, conds))) or EVERYONE_ELSE
        if name in self._names:  # two different sets under one name: the sections tell them apart
            name += f" (sections {', '.join(str(i + 1) for i in sections) or 'none'})"
        self._names.add(name)
        return name

    def possible(self) -> list[Variant]:
        """Every variant some reader could get, without a list: each mix of the tags the
        conditions name and of the field values they compare (plus any other value)."""
        if not self.conditional:
            return [self.everyone()]
        conds = [c for _, c in self.located()]
        tags = sorted(set().union(*map(tags_of, conds)))
        choices = [sorted(set().union(*(values_of(c, f) for c in conds))) + [""] for f in self.fields]
        found: dict[Variant, None] = {}
        tag_sets = itertools.chain.from_iterable(itertools.combinations(tags, n) for n in range(len(tags) + 1))
        kinds = itertools.product(tag_sets, itertools.product(*choices))
        for t, values in itertools.islice(kinds, MAX_POSSIBLE):
            found.setdefault(self.decide(frozenset(t), dict(zip(self.fields, values))))
        return ordered(found)

    def of_list(self, readers: Iterable[Subscriber]) -> Counter[Variant]:
        """How many of these readers get each variant."""
        return Counter(map(self.of, readers))

    def project(self, v: Variant) -> Issue:
        """The issue as this variant's readers get it (not validated again: an empty one is a check)."""
        issue = self.issue
        return issue.model_copy(update={"sections": [issue.sections[i] for i in v.sections],
                                        "intro": issue.intro if v.intro else None})

    def find(self, name: str, candidates: Iterable[Variant]) -> Variant:
        """A variant by its name (test-send --variant), or one line listing the names."""
        candidates = list(candidates)
        for v in candidates:
            if v.name == name or v.name.casefold() == name.strip().casefold():
                return v
        raise NewsletterError(f"no variant named '{name[:60]}'", field="--variant",
                              hint="the variants: " + "; ".join(v.name for v in candidates))


def ordered(variants: Iterable[Variant]) -> list[Variant]:
    """Most sections first, "everyone else" last: the order of the preview's switch and listings."""
    return sorted(variants, key=lambda v: (v.name == EVERYONE_ELSE, -len(v.sections), v.name))


class Editions:
    """The issue composed once per variant, on first use; each shares the full issue's web copy.

    `full` is the whole issue as it is sent, already finished; `finish` gives each other edition the
    same finishing (a send's tracked links and subject test slot, send.py); None: as composed (previews)."""

    def __init__(self, full: Composed, settings_dir: Path | None,
                 finish: Callable[[Composed], Composed] | None = None):
        self.full = full
        self.settings_dir = settings_dir
        self.finish = finish
        self.audiences = Audiences(full.issue)
        self._composed: dict[Variant, Composed] = {}

    def composed(self, v: Variant) -> Composed:
        """The variant's email (per reader in a send: one look-up once it is made)."""
        c = self._composed.get(v)
        if c is None:
            full = self.full
            if v == self.audiences._all:
                c = full
            else:
                c = compose_issue(self.audiences.project(v), full.source, full.settings, self.settings_dir,
                                  web_html=full.web_html, variant=v.name)
                c = self.finish(c) if self.finish is not None else c
            self._composed[v] = c
        return c
