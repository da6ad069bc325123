"""Merge fields: the only template syntax allowed in issue content.

`{{ name }}` or `{{ name | default("friend") }}`, nothing else of Jinja. At compose
time each field becomes an opaque alphanumeric token that survives Markdown, Jinja,
MJML and premailer untouched (premailer URL-encodes spaces in hrefs, so `{{ x }}`
itself would not); the finished HTML is then split on the tokens once, and per
recipient only the values are filled in.
"""

from __future__ import annotations

import ast
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Iterable
from urllib.parse import quote

MERGE_RE = re.compile(
    r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:\|\s*default\(\s*(\"(?:[^\"\\\r\n]|\\.)*\"|'(?:[^'\\\r\n]|\\.)*')\s*\)\s*)?\}\}"
)
EXAMPLE = '{{ name }} or {{ name | default("friend") }}'
# What a link may start with, in content and in a reader's value that decides a link's scheme.
SCHEMES = ("http://", "https://", "mailto:")
# The placeholders of settings.unsubscribe_url, filled per recipient by fill_url_placeholders.
URL_FIELDS = ("email", "token")


def default_value(literal: str | None) -> str | None:
    """The text of a default("…") as written in the file, its escapes (\\n, \\x1b) evaluated.

    ValueError for an escape Python cannot read ("\\x0", "\\N{nonsense}"): a user's typo, not a crash.
    validators.merge_default judges the evaluated text.
    """
    if literal is None:
        return None
    try:
        return str(ast.literal_eval(literal))
    except (SyntaxError, ValueError):
        raise ValueError(f"default({literal[:40]}) is not readable quoted text: check its backslash escapes") from None


def url_placeholders(template: str, allowed: Iterable[str] = URL_FIELDS) -> set[str]:
    """The placeholder names a URL template uses, parsed by MERGE_RE like every merge field.

    One parser for the settings check, `check` and the per-recipient fill: whatever spacing
    passes here ({{email}}, {{  token }}) is exactly what fill_url_placeholders fills. ValueError
    for a default (these are always filled), a name not allowed, or a brace left over.
    """
    allowed = tuple(allowed)
    only = "may use only " + " and ".join("{{ %s }}" % a for a in allowed)
    names = set()
    for m in MERGE_RE.finditer(template):
        if m.group(2) is not None:
            raise ValueError(f"{only}, without a default: found '{m.group()[:60]}'")
        if m.group(1).lower() not in allowed:
            raise ValueError(f"{only}, found '{m.group()[:60]}'")
        names.add(m.group(1).lower())
    rest = MERGE_RE.sub("", template)
    stray = re.search(r"[{}]", rest)
    if stray:
        raise ValueError(f"{only}, found '{rest[max(stray.start() - 10, 0): stray.start() + 20]}'")
    return names


def fill_url_placeholders(template: str, **values: str) -> str:
    """template with each {{ name }} (any spacing, any case) replaced by its value, URL-encoded."""
    def value(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        if name not in values:
            raise ValueError(f"no value for {{{{ {name} }}}}")
        return quote(values[name], safe="@")

    return MERGE_RE.sub(value, template)


@dataclass(frozen=True)
class Field:
    name: str
    default: str | None
    # Decides where a link goes (see FieldTable.mark_url): a reader's value must be a link itself.
    url: bool = field(default=False, compare=False)


@dataclass
class FieldTable:
    """Numbers each distinct (name, default) pair and hands out tokens for them."""

    nonce: str = field(default_factory=lambda: "".join(secrets.choice("abcdefghjkmnpqrstuvwxy") for _ in range(6)))
    fields: list[Field] = field(default_factory=list)
    _index: dict[Field, int] = field(default_factory=dict)

    def token(self, name: str, default: str | None = None) -> str:
        f = Field(name.lower(), default)
        i = self._index.get(f)
        if i is None:
            i = self._index[f] = len(self.fields)
            self.fields.append(f)
        return f"mf{self.nonce}{i}z"

    @property
    def token_re(self) -> re.Pattern[str]:
        return re.compile(f"mf{self.nonce}(\\d+)z")

    def tokenize(self, text: str) -> str:
        """Replace each merge field in text with its token."""
        return MERGE_RE.sub(lambda m: self.token(m.group(1), default_value(m.group(2))), text)

    def tokenize_url(self, text: str) -> str:
        """tokenize for a link's address (link, button, image href), marking the field that decides it."""
        text = self.tokenize(text)
        self.mark_url(text)
        return text

    def mark_url(self, url: str) -> None:
        """Mark the field whose value decides a link's scheme: the first one in the (tokenized) URL,
        unless a literal http(s):// or mailto: comes before it. A reader's value could otherwise
        make the link javascript:, data: or //elsewhere; later fields follow a checked start.
        A field used both in text and in a URL is thereby judged as a URL."""
        m = self.token_re.search(url)
        if m is None or url[:m.start()].strip().lower().startswith(SCHEMES):
            return
        i = int(m.group(1))
        self.fields[i] = replace(self.fields[i], url=True)

    def placeholder(self, i: int) -> str:
        """How a field reads in email.html on disk: as the user wrote it."""
        f = self.fields[i]
        if f.default is None:
            return "{{ %s }}" % f.name
        return '{{ %s | default(%s) }}' % (f.name, _quote(f.default))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
