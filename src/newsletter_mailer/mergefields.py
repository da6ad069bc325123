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
from dataclasses import dataclass, field

MERGE_RE = re.compile(
    r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?:\|\s*default\(\s*(\"(?:[^\"\\\r\n]|\\.)*\"|'(?:[^'\\\r\n]|\\.)*')\s*\)\s*)?\}\}"
)
EXAMPLE = '{{ name }} or {{ name | default("friend") }}'


def _default(literal: str | None) -> str | None:
    return None if literal is None else str(ast.literal_eval(literal))


@dataclass(frozen=True)
class Field:
    name: str
    default: str | None


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
        return MERGE_RE.sub(lambda m: self.token(m.group(1), _default(m.group(2))), text)

    def placeholder(self, i: int) -> str:
        """How a field reads in email.html on disk: as the user wrote it."""
        f = self.fields[i]
        if f.default is None:
            return "{{ %s }}" % f.name
        return '{{ %s | default(%s) }}' % (f.name, _quote(f.default))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
