"""One check's result. Its own module so every family of checks (checks.py, contrast_checks.py,
reader_checks.py) builds the same thing without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Check:
    level: Literal["ok", "warning", "error"]
    message: str
    name: str = ""  # the check's family, as [checks] warnings_as_errors lists it
    section: int | None = None  # 1-based section number, for the preview's "next to the section"
    field: str | None = None  # where to fix it: an issue field (sections[2].image.alt) or a setting
    in_settings: bool = False  # fixed in newsletter.toml, not the issue: a send's error names that file
