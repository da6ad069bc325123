"""Who a section is for (`for:` in the issue): plain YAML conditions on a reader's tags and fields.

Not template code: the conditions are data, so every variant of an issue can be listed, named,
previewed and checked before anything is sent (variants.py). Tags compare lowercased (as the
list's tags cell is read); field values compare trimmed and case-insensitively.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Iterator, Mapping, Optional

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.subscribers import RESERVED, merge_name
from newsletter_mailer.validators import StrictModel, not_blank, single_line

# Fields every reader has besides the list's own columns.
READER_FIELDS = frozenset({"email", "name"})


def _tag(v: str) -> str:
    v = not_blank(single_line(v)).strip().lower()
    if ";" in v:
        raise ValueError(f"'{v[:40]}': one tag per item (the list separates tags with ;)")
    return v


def _field(v: str) -> str:
    name = merge_name(not_blank(single_line(v)))
    if name in ("tags", "status"):
        raise ValueError(f"'{v[:40]}' is not a field: use tags:, tags_all: or not_tags: for tags")
    return name


Tag = Annotated[str, AfterValidator(_tag)]
Tags = Annotated[list[Tag], Field(min_length=1)]
FieldName = Annotated[str, AfterValidator(_field)]
Value = Annotated[str, AfterValidator(single_line)]


class For(StrictModel):
    """A section's readers. Keys given together must all hold; all:/any: combine conditions."""

    model_config = ConfigDict(title="For")  # merged with StrictModel's

    tags: Optional[Tags] = Field(None, description="readers with any of these tags")
    tags_all: Optional[Tags] = Field(None, description="readers with all of these tags")
    not_tags: Optional[Tags] = Field(None, description="readers with none of these tags")
    field: Optional[FieldName] = Field(None, description="a column of the list (like school_year), with in: or "
                                                         "equals:")
    in_: Optional[Annotated[list[Value], Field(min_length=1)]] = Field(
        None, alias="in", description="the field's value is one of these (case-insensitive)")
    equals: Optional[Value] = Field(None, description="the field's value is this (case-insensitive)")
    all: Optional[Annotated[list[For], Field(min_length=1)]] = Field(None, description="every one of these holds")
    any: Optional[Annotated[list[For], Field(min_length=1)]] = Field(None, description="at least one of these holds")

    @model_validator(mode="after")
    def _shape(self) -> For:
        if self.field is None and (self.in_ is not None or self.equals is not None):
            raise ValueError("in: and equals: need a field: (the list column to compare)")
        if self.field is not None and (self.in_ is None) == (self.equals is None):
            raise ValueError("field: needs one of in: (a list of values) or equals: (one value)")
        if all(getattr(self, k) is None for k in type(self).model_fields):
            raise ValueError("say who it is for: tags, tags_all, not_tags, field with in or equals, all or any")
        return self


def matches(c: For, tags: frozenset[str], fields: Mapping[str, str]) -> bool:
    """Whether a reader (lowercased tags; fields by merge name, with email and name) is one of c's."""
    if c.tags is not None and tags.isdisjoint(c.tags):
        return False
    if c.tags_all is not None and not tags.issuperset(c.tags_all):
        return False
    if c.not_tags is not None and not tags.isdisjoint(c.not_tags):
        return False
    if c.field is not None:
        value = (fields.get(c.field) or "").strip().casefold()
        wanted = c.in_ if c.in_ is not None else [c.equals or ""]
        if value not in {w.strip().casefold() for w in wanted}:
            return False
    if c.all is not None and not all(matches(x, tags, fields) for x in c.all):
        return False
    if c.any is not None and not any(matches(x, tags, fields) for x in c.any):
        return False
    return True


def label(c: For) -> str:
    """A short name for the readers, as the preview's switch shows it: "parents", "schools + north"."""
    parts = []
    if c.tags is not None:
        parts.append(" or ".join(c.tags))
    if c.tags_all is not None:
        parts.append(" + ".join(c.tags_all))
    if c.not_tags is not None:
        parts.append("not " + " or ".join(c.not_tags))
    if c.field is not None:
        parts.append(f"{c.field}: {' or '.join(c.in_) if c.in_ is not None else c.equals}")
    if c.all is not None:
        parts.append(" + ".join(map(_grouped, c.all)))
    if c.any is not None:
        parts.append(" or ".join(f"({t})" if " + " in t else t for t in map(label, c.any)))
    return " + ".join(_grouped_text(p) for p in parts) if len(parts) > 1 else parts[0]


def _grouped(c: For) -> str:
    return _grouped_text(label(c))


def _grouped_text(text: str) -> str:
    return f"({text})" if " or " in text else text


def walk(c: For) -> Iterator[For]:
    yield c
    for sub in (c.all or []) + (c.any or []):
        yield from walk(sub)


def fields_of(c: For) -> set[str]:
    return {x.field for x in walk(c) if x.field is not None}


def tags_of(c: For) -> set[str]:
    return {t for x in walk(c) for t in (x.tags or []) + (x.tags_all or []) + (x.not_tags or [])}


def values_of(c: For, field: str) -> set[str]:
    return {v.strip().casefold() for x in walk(c) if x.field == field
            for v in (x.in_ if x.in_ is not None else [x.equals or ""])}


def check_columns(located: list[tuple[tuple, For]], columns: frozenset[str], issue_path: Path,
                  list_path: Path | str) -> None:
    """A condition on a field the list has no column for would match nobody: an error, at its line."""
    have = columns | READER_FIELDS
    for loc, c in located:
        for x in walk(c):
            if x.field is not None and x.field not in have and x.field not in RESERVED:
                from newsletter_mailer.sourcefile import field_path, line_in_file  # the error path only

                shown = ", ".join(sorted(columns)) or "none"
                raise NewsletterError(f"field '{x.field}' is not a column of {list_path} (its merge columns: "
                                      f"{shown})", path=issue_path, line=line_in_file(issue_path, loc),
                                      field=field_path(loc),
                                      hint="add the column to the list, or correct the field's name")
