"""Subject tests: `send ISSUE --ab-subject "Other" --sample 20% [--wait 4h]`, then `--finish-ab`.

The first run sends the issue's own subject (A) to half of a random sample of the list and the
other subject (B) to the other half, each reader's variant written to the ledger before anything
goes out, and stops. The finish (`--finish-ab`, or the same command once the wait is over) picks
the winner by the readers who clicked a tracked link, or with [tracking] ab_winner = "opens" who
opened (counted by newsletter serve or from SendGrid's Event Webhook), with a two-proportion
z-test: unless B is better at the 5% level the issue's own subject wins, and the choice is
recorded once, so a resumed finish sends the same subject. Everyone else on the list then gets
it, exactly once, through the ledger like any send.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.db import Database

SIGNIFICANCE = 0.05
VERB = {"clicks": "clicked", "opens": "opened"}  # [tracking] ab_winner: what the readers counted did
_WAIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WAIT = 365 * 86400  # longer is a typo (and 10^400 seconds overflows a float, 10^20 days the ledger's integer)


@dataclass(frozen=True)
class Request:
    """What the command line asked: a new test (subject_b, share, wait) or its finish."""

    subject_b: str | None = None
    share: float | None = None
    wait_seconds: int | None = None
    finish: bool = False


@dataclass(frozen=True)
class Test:
    """A test as the ledger holds it."""

    issue: str
    subject_b: str
    share: float
    wait_until: int | None
    winner: str | None
    verdict: str | None


def parse_share(text: str) -> float:
    """'20%' or '0.2' → 0.2; one line naming --sample otherwise."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1 or math.isnan(value):
        raise NewsletterError(f"--sample '{text}' is not a share of the list", field="--sample",
                              hint="write a percentage between 0 and 100, e.g. 20%")
    return value


def parse_wait(text: str) -> int:
    m = _WAIT.match(text)
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m else math.inf
    if not seconds <= MAX_WAIT:
        raise NewsletterError(f"--wait '{text}' is not a duration of at most a year", field="--wait",
                              hint="e.g. 90m, 4h or 2d")
    return int(seconds)


def split(keys: Iterable[str], share: float, seed: bytes) -> dict[str, str]:
    """A random sample of round(share × n) readers, half A and half B (sizes within one), drawn by a
    keyed hash of each address: the same draw for the same seed, whatever the list's order."""
    ranked = sorted(keys, key=lambda k: hmac.digest(seed, k.encode("utf-8"), hashlib.sha256))
    sample = ranked[:round(share * len(ranked))]
    return {k: "AB"[i % 2] for i, k in enumerate(sample)}


def z_test(clicked_a: int, n_a: int, clicked_b: int, n_b: int) -> tuple[float, float]:
    """Two-proportion z-test (pooled): (z of B over A, two-sided p-value); (0, 1) when undefined."""
    if n_a <= 0 or n_b <= 0:
        return 0.0, 1.0
    pooled = (clicked_a + clicked_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (clicked_b / n_b - clicked_a / n_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def decide(clicked_a: int, n_a: int, clicked_b: int, n_b: int, metric: str = "clicks") -> tuple[str, str]:
    """(winner, the sentence that says why): B only when it is better at the 5% level."""
    z, p = z_test(clicked_a, n_a, clicked_b, n_b)
    numbers = (f"A: {clicked_a} of {n_a} {VERB[metric]} ({_pct(clicked_a, n_a)}), B: {clicked_b} of {n_b} "
               f"({_pct(clicked_b, n_b)}); z = {z:.2f}, p = {p:.3f}")
    if p < SIGNIFICANCE:
        winner = "B" if z > 0 else "A"
        return winner, f"{numbers}: {'B' if winner == 'B' else 'A'} is better at the 5% level"
    return "A", f"{numbers}: no significant difference at the 5% level, so the issue's own subject is sent"


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "—"


# -- in the ledger -----------------------------------------------------------------------------

def load(db: Database, issue: str) -> Test | None:
    row = db.execute("SELECT issue, subject_b, share, wait_until, winner, verdict FROM ab_tests WHERE issue=?",
                     (issue,)).fetchone()
    return Test(*row) if row else None


def variants(db: Database, issue: str) -> dict[str, str]:
    return dict(db.execute("SELECT email, variant FROM ab_variants WHERE issue=?", (issue,)))


def start(db: Database, issue: str, request: Request, draw: dict[str, str], now: int) -> Test:
    """The test and every sampled reader's variant, committed together before anything is sent."""
    wait_until = now + request.wait_seconds if request.wait_seconds else None
    with db.transaction():
        db.execute("INSERT INTO ab_tests (issue, subject_b, share, wait_until, started_at) VALUES (?,?,?,?,?)",
                   (issue, request.subject_b, request.share, wait_until,
                    datetime.now(timezone.utc).isoformat(timespec="seconds")))
        db.executemany("INSERT INTO ab_variants (issue, email, variant) VALUES (?,?,?)",
                       [(issue, k, v) for k, v in draw.items()])
    return load(db, issue)


def sample_results(ledger_db: Database, issue: str) -> dict[str, int]:
    """Sampled readers sent each variant: {'A': n, 'B': n}."""
    out = {"A": 0, "B": 0}
    for variant, n in ledger_db.execute(
            "SELECT v.variant, count(*) FROM ab_variants v JOIN deliveries d ON d.issue=v.issue AND d.email=v.email "
            "WHERE v.issue=? AND d.status IN ('sent', 'scheduled') GROUP BY v.variant", (issue,)):
        out[variant] = n
    return out


def choose(db: Database, issue: str, winner: str, verdict: str) -> Test:
    """The winner recorded once: a resumed finish sends the same subject, whatever has been clicked since."""
    with db.transaction():
        db.execute("UPDATE ab_tests SET winner=?, verdict=? WHERE issue=? AND winner IS NULL", (winner, verdict, issue))
    return load(db, issue)


def new_seed() -> bytes:
    return os.urandom(16)


def summary(ledger_db: Database, store_db: Database | None, issue: str,
            metric: str = "clicks") -> list[tuple[str, int, int]] | None:
    """Each variant's (label, sampled readers sent, readers who clicked, or opened: metric), or None
    without a test: for `status` and `report` (which say VERB[metric])."""
    from newsletter_mailer.audience import clicks

    test = load(ledger_db, issue)
    if test is None:
        return None
    sent = sample_results(ledger_db, issue)
    clicked = clicks.variant_clickers(store_db, issue, metric) if store_db is not None else {"A": 0, "B": 0}
    return [("A (the issue's subject)", sent["A"], clicked["A"]), (f"B '{test.subject_b}'", sent["B"], clicked["B"]),
            ("winner", 0, 0) if test.winner is None else (f"winner {test.winner}: {test.verdict}", 0, 0)]
