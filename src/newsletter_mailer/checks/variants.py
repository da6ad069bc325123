"""The checks of an issue's variants (for: on sections): an empty variant, a section for nobody.

Without a list the variants are every one some reader could get (Audiences.possible); with one,
those its readers do get. An empty variant is an error (its readers would get an issue with no
sections); a section no reader on the list gets is a warning (a typo in a tag, most often).
"""

from __future__ import annotations

from collections import Counter

from newsletter_mailer.checks.result import Check
from newsletter_mailer.variants import Audiences, Variant


def variant_checks(audiences: Audiences, readers: Counter[Variant] | None = None,
                   list_name: str | None = None) -> list[Check]:
    if not audiences.conditional:
        return []
    variants = list(readers) if readers is not None else audiences.possible()
    out = []
    for v in variants:
        if not v.sections:
            who = f"{readers[v]} reader(s) on {list_name}" if readers is not None else "some readers"
            out.append(Check("error", f"variant '{v.name}' has no sections: {who} would get an empty issue "
                                      "(give a section without for:, or widen a for:)", "empty-variant"))
    if readers is not None:
        got = set().union(*(v.sections for v in readers))
        for i, s in enumerate(audiences.issue.sections):
            if i not in got:
                out.append(Check("warning", f"section {i + 1} ({s.heading}) matches nobody on {list_name}",
                                 "matches-nobody", i + 1, f"sections[{i}].for"))
    if not out:
        out.append(Check("ok", f"{len(variants)} variant(s), none empty"
                               + (f", every section read by someone on {list_name}" if readers is not None else ""),
                         "variants"))
    return out
