"""A simulated week: 10,000 readers join at random times, some unsubscribe, a runner runs every
few hours with a clock the test moves (in process, no sleeping). Every reader gets each step once,
none early, none closer than min_gap to the one before, none twice, none after unsubscribing."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from newsletter_mailer.audience.store import Change
from newsletter_mailer.sequences import members
from newsletter_mailer.state.handle import State
from tests.test_sequences import DAY, STEPS, T0, Clock, newsletter, runner

AFTER = {"1-hello": 0, "2-how-to-help": 3 * DAY, "3-training": 10 * DAY}


@pytest.mark.slow
def test_a_week_of_ten_thousand_readers(tmp_path):
    rng = random.Random(23)
    folder = newsletter(tmp_path / "nl")
    n, every = 10_000, 6 * 3600
    joins = {f"r{i:05d}@example.org": T0 + rng.randrange(7 * DAY) for i in range(n)}
    leaves = {e: t + rng.randrange(12 * DAY) for e, t in joins.items() if rng.random() < 0.1}
    clock = Clock()
    run = runner(folder, None, clock).run
    store = State(folder / "state").audience()
    seen: dict[str, set[str]] = {s: set() for s, _ in STEPS}
    got: dict[tuple[str, str], list[int]] = {}
    pending_joins = sorted(joins.items(), key=lambda kv: kv[1])
    pending_leaves = sorted(leaves.items(), key=lambda kv: kv[1])
    t = T0
    while t <= T0 + 7 * DAY + 12 * DAY:
        clock.t = t
        joined = [e for e, at in pending_joins if at <= t]
        pending_joins = pending_joins[len(joined):]
        with store.transaction():   # each at their own time: the clock of the sign-up
            for e in joined:
                members.enrol(store, "welcome", [e], joins[e])
        left = [e for e, at in pending_leaves if at <= t]
        pending_leaves = pending_leaves[len(left):]
        store.record(Change(e, "unsubscribed", "link") for e in left)
        report = run()
        assert not report.errors and not report.busy
        for step in seen:
            folder_ = folder / "outbox" / step
            names = set(os.listdir(folder_)) if folder_.is_dir() else set()
            for name in names - seen[step]:
                got.setdefault((step, name.rsplit("-", 1)[0]), []).append(t)
            seen[step] = names
        t += every
    store.close()
    assert all(len(times) == 1 for times in got.values()), "a step sent twice"
    for (step, email), [at] in got.items():
        assert at >= joins[email] + AFTER[step], f"{step} to {email} early"
        assert email not in leaves or at < leaves[email], f"{step} to {email} after unsubscribing"
    stayed = [e for e in joins if e not in leaves]
    for email in stayed:
        times = [got[(s, email)][0] for s, _ in STEPS]   # each step, once
        assert all(b - a >= DAY for a, b in zip(times, times[1:])), f"{email}: steps closer than min_gap"
    print(f"\nSIMULATION {n} readers, {len(leaves)} unsubscribed, {len(got)} messages")
