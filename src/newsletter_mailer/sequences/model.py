"""A sequence file (sequences/<name>.yaml) as a pydantic model, with file:line errors.

Steps are issue files in the usual schema, keyed by their slug (a reader's place survives
edits to the file); `after` counts from the reader's start, `min_gap` between two steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.schema import slug_of
from newsletter_mailer.sourcefile import load_yaml_model
from newsletter_mailer.validators import OneLine, StrictModel

FOLDER = "sequences"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d{1,6})\s*([smhdw]?)\s*")


def seconds(value: Any) -> int:
    """'0', '90m', '12h', '3d', '2w' (or a number of seconds) as seconds."""
    if isinstance(value, bool):
        raise ValueError("should be a duration such as 0, 12h, 3d or 2w")
    if isinstance(value, int) and 0 <= value < 10**9:
        return value
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError("should be a duration such as 0, 12h, 3d or 2w")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


Duration = Annotated[int, BeforeValidator(seconds)]


class Step(StrictModel):
    issue: OneLine = Field(description="the step's issue file, relative to newsletter.toml's folder")
    after: Duration = Field(0, description="how long after the reader's start: 0, 12h, 3d, 2w")
    for_: Any = Field(None, alias="for", description="who gets the step (the audiences feature)")

    @field_validator("for_")
    @classmethod
    def _needs_audiences(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("for: on a step needs the audiences feature, which this version does not have; "
                             "remove it (every reader in the sequence gets the step)")
        return v


class SequenceFile(StrictModel):
    start: Literal["confirmed", "imported", "manual"] = Field(
        description="confirmed: a form sign-up confirmed; imported: `audience import --start-sequence`; "
                    "manual: `newsletter sequences start`")
    min_gap: Duration = Field(86400, description="at least this long between two steps to one reader (default 1d)")
    steps: list[Step] = Field(min_length=1, max_length=100)


@dataclass(frozen=True)
class StepInfo:
    slug: str       # the issue file's slug: the step's key
    path: Path
    after: int      # seconds after the reader's start
    line: int | None


@dataclass(frozen=True)
class Sequence:
    name: str
    path: Path
    start: str
    min_gap: int
    steps: tuple[StepInfo, ...]

    def ledger_key(self, step: StepInfo) -> str:
        """The step's rows in the ledger: apart from the issue sent on its own, and from other sequences."""
        return f"sequence:{self.name}:{step.slug}"

    def lock_key(self) -> str:
        return f"sequence.{self.name}"


def load(path: Path, settings_dir: Path) -> Sequence:
    """The file read and checked (not yet its steps' issues: check.py composes them)."""
    name = slug_of(path)
    data = load_yaml_model(path, SequenceFile)
    from newsletter_mailer.sourcefile import YamlDoc, read_text

    doc = YamlDoc(path, read_text(path))
    steps, seen = [], {}
    for i, step in enumerate(data.steps):
        line = doc.line_of(("steps", i, "issue"))
        file = Path(step.issue)
        file = file if file.is_absolute() else settings_dir / file
        if not file.is_file():
            raise NewsletterError(f"{step.issue} is not a file", path=path, line=line,
                                  field=f"steps[{i}].issue", hint="paths are relative to newsletter.toml's folder")
        try:
            slug = slug_of(file)
        except NewsletterError as exc:
            raise NewsletterError(exc.message, path=path, line=line, field=f"steps[{i}].issue") from None
        if slug in seen:
            raise NewsletterError(f"{slug} is already step {seen[slug] + 1}: each step is "
                                  "keyed by its file name", path=path, line=line, field=f"steps[{i}].issue")
        seen[slug] = i
        if steps and step.after < steps[-1].after:
            raise NewsletterError("after is earlier than the step before it", path=path,
                                  line=doc.line_of(("steps", i, "after")), field=f"steps[{i}].after",
                                  hint="list the steps in the order they are sent")
        steps.append(StepInfo(slug, file, step.after, line))
    return Sequence(name, path, data.start, data.min_gap, tuple(steps))


def files(settings_dir: Path) -> list[Path]:
    folder = settings_dir / FOLDER
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def find(name: str, settings_dir: Path) -> Sequence:
    """`NAME` (or a path) as a sequence; one line when there is none."""
    candidate = Path(name)
    path = candidate if candidate.suffix in (".yaml", ".yml") else settings_dir / FOLDER / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in files(settings_dir)) or "none"
        raise NewsletterError(f"no sequence {name!r}", path=path, hint=f"sequences here: {known}")
    return load(path, settings_dir)


def load_all(settings_dir: Path) -> list[Sequence]:
    return [load(p, settings_dir) for p in files(settings_dir)]


def is_sequence_file(path: Path) -> bool:
    """`newsletter check` on sequences/x.yaml checks a sequence, not an issue."""
    return path.parent.name == FOLDER and path.suffix in (".yaml", ".yml")
