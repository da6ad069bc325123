"""`newsletter check sequences/<name>.yaml`: the file, then every step checked as a send would check it."""

from __future__ import annotations

from pathlib import Path

from newsletter_mailer.checks import run_checks
from newsletter_mailer.checks.result import Check
from newsletter_mailer.compose import compose
from newsletter_mailer.sequences.model import Sequence, load
from newsletter_mailer.settings import Settings


def check(path: Path, settings: Settings, settings_dir: Path) -> tuple[Sequence, list[tuple[Path, list[Check]]]]:
    """The sequence and each step's checks; a step with a merge field readers cannot fill (they
    have only an address and a name) fails like a check."""
    seq = load(path, settings_dir)
    out = []
    for step in seq.steps:
        composed = compose(step.path, settings, settings_dir)
        checks = run_checks(composed)
        for name in composed.filler().missing(frozenset()):
            checks.append(Check("error", f"merge field {{{{ {name} }}}} has no default: a sequence's readers "
                                         f"have only an address and a name; write {{{{ {name} | default(\"…\") }}}}",
                                "sequence", field=name))
        out.append((step.path, checks))
    return seq, out
