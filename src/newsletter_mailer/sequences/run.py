"""`newsletter sequences run`: every due, not-yet-sent step to every reader of each sequence, once.

One query finds who is due (members.due); with nobody due that is all a run does (it runs every
minute). Else the sequence's send lock is taken (a second runner — cron beside `serve
--sequences`, another host on PostgreSQL — skips it this time) and the query asked again under it; each reader gets at most their next step in a run. A step is prepared like a
send (compose, checks, provider, unsubscribe links: send.prepare), and goes out through the
ledger like one (deliver_batch: 'sending' committed first; after a kill those rows are
'uncertain' and held back, never sent twice). A reader passes a step once the ledger says it
was sent; a run that finds a 'sent' row for a reader not yet moved on (killed in between)
moves them on without sending. A step whose check fails is sent to nobody, with one line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.sequences import members, model
from newsletter_mailer.sequences.model import Sequence, StepInfo
from newsletter_mailer.settings import Settings
from newsletter_mailer.state.handle import State
from newsletter_mailer.state.send_lock import Busy
from newsletter_mailer.validators import header_problem


@dataclass
class StepRun:
    sequence: str
    step: str
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    would_send: int = 0
    held: int = 0          # uncertain, or refused for good, before this run: not sent again
    moved_on: int = 0      # the ledger already said sent (a run killed before moving them on)
    left: int = 0          # unsubscribed (bounced, complained) just before their batch


@dataclass
class RunReport:
    steps: list[StepRun] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    errors: list[NewsletterError] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return max((e.exit_code for e in self.errors), default=0)


@dataclass
class Runner:
    """What every run needs: the newsletter's settings and state, the provider and the clock."""

    settings: Settings
    settings_dir: Path
    state: State
    env: Mapping[str, str]
    provider: str | None = None
    outbox: Path | None = None
    dry_run: bool = False
    resend_uncertain: bool = False   # the operator checked the server's log: send those again
    clock: Callable[[], float] = time.time

    def run(self, names: list[str] | None = None) -> RunReport:
        """Every sequence (or those named); a broken file or step is one error, the others still run."""
        report = RunReport()
        paths = [None] * len(names) if names else model.files(self.settings_dir)
        for i, path in enumerate(paths):
            try:
                seq = model.find(names[i], self.settings_dir) if names else model.load(path, self.settings_dir)
                self.run_one(seq, report)
            except Busy as exc:
                report.busy.append(exc.message)
            except NewsletterError as exc:
                report.errors.append(exc)
        return report

    def run_one(self, seq: Sequence, report: RunReport) -> None:
        now = int(self.clock())
        store = ledger = lock = None
        try:
            store = self.state.audience(create=not self.dry_run)
            if store is None or not any(True for _ in members.due(store, seq, now)):
                return  # the every-minute case: one query, no lock taken, nothing written
            if not self.dry_run:  # then the lock, and who is due asked again under it
                lock = self.state.send_lock(seq.lock_key())
            due = list(members.due(store, seq, now))
            if not due:
                return
            ledger = self.state.ledger(create=not self.dry_run)
            groups: dict[str, list[members.Member]] = {}
            for m in due:
                groups.setdefault(members.next_step(seq, m.passed).slug, []).append(m)
            for step in seq.steps:
                if step.slug in groups:
                    result = StepRun(seq.name, step.slug)
                    report.steps.append(result)
                    try:
                        self._step(seq, step, groups[step.slug], store, ledger, now, result)
                    except NewsletterError as exc:
                        report.errors.append(NewsletterError(
                            f"sequence {seq.name}, step {step.slug}: {exc.message}; the step stops here for this run",
                            path=exc.path, line=exc.line, field=exc.field, hint=exc.hint,
                            exit_code=max(exc.exit_code, 1)))
        finally:
            for held in (ledger, store, lock):
                if held is not None:
                    (held.release if held is lock else held.close)()

    def _step(self, seq: Sequence, step: StepInfo, group: list[members.Member], store, ledger, now: int,
              result: StepRun) -> None:
        from newsletter_mailer.send import Options, Plan, Summary, deliver_batch, prepare

        key = seq.ledger_key(step)
        if ledger is not None and not self.dry_run:
            ledger.mark_in_flight_uncertain(key)
        states = ledger.states_among(key, [m.email for m in group]) if ledger is not None else {}
        to_send, done = [], []
        for m in group:
            status, permanent = states.get(m.email, (None, False))
            if status is None or (status == "failed" and not permanent) or (
                    status == "uncertain" and self.resend_uncertain):
                to_send.append(m)
            elif status in ("sent", "scheduled"):
                done.append(m.email)
            else:
                result.held += 1
        if not self.dry_run:
            result.moved_on = len(done)
            members.passed(store, seq.name, step.slug, done, now)
        if not to_send:  # only held back or moved on: nothing to compose
            return
        when = datetime.fromtimestamp(now, timezone.utc)
        p = prepare(Options(issue=step.path, config=self.settings.file, state=self.state.folder,
                            provider=self.provider, outbox=self.outbox, env=dict(self.env), dry_run=self.dry_run,
                            sync=False, now=lambda: when))
        missing = p.composed.filler().missing(frozenset())
        if missing:
            raise NewsletterError(f"merge field {{{{ {missing[0]} }}}} has no default: a sequence's readers "
                                  "have only an address and a name", path=step.path, field=missing[0],
                                  hint=f'write {{{{ {missing[0]} | default("…") }}}}')
        if self.dry_run:
            result.would_send = len(to_send)
            return
        provider = p.provider
        summary = Summary(plan=Plan(), provider=provider.name)
        provider.open()
        try:
            size = provider.batch_size
            for start in range(0, len(to_send), size):
                chunk = to_send[start:start + size]
                gone = store.suppressed_among([m.email for m in chunk])  # left since the query
                result.left += sum(m.email in gone for m in chunk)
                batch = [_recipient(p, m) for m in chunk if m.email not in gone]
                if not batch:
                    continue
                try:
                    deliver_batch(ledger, key, provider, batch, summary)
                finally:
                    sent = [e for e, (s, _) in ledger.states_among(key, [r.email for r in batch]).items()
                            if s == "sent"]
                    members.passed(store, seq.name, step.slug, sent, now)
        finally:
            provider.close()
            result.sent, result.failed, result.uncertain = summary.sent, summary.failed, summary.uncertain


def _recipient(p, m: members.Member):
    """The reader's message values. The name was typed by a stranger (the sign-up form): one that
    could not go into a header, or would make a link unsafe, is left out (the defaults fill it)."""
    name = m.name if m.name and header_problem(m.name) is None else ""
    r = p.recipient(m.email, name, {})
    return r if not name or p.composed.filler().unsafe_link(r.values) is None else p.recipient(m.email, "", {})
