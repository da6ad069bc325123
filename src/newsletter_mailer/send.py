"""Send an issue to the list: gather and check everything, then deliver, recording each step.

Like pelican gathers before it writes, nothing is sent until the settings, the issue,
its checks, the whole list, the merge fields, the provider's configuration and the
ledger have all been read and found good. Then recipients stream from the list a
second time (a million rows are never held in memory), in provider-sized batches:
ledger 'sending' → provider → ledger 'sent'/'failed'.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from newsletter_mailer import unsubscribe
from newsletter_mailer.checks import errors, run_checks
from newsletter_mailer.compose import Composed, compose
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.ledger import Ledger, key
from newsletter_mailer.message import MessageTemplate, unsubscribe_link
from newsletter_mailer.providers import Provider, Recipient, Result, SendContext, get_provider
from newsletter_mailer.settings import load_settings
from newsletter_mailer.subscribers import Subscriber, SubscriberList, read_suppressions

TEST_PREFIX = "[TEST] "


@dataclass
class Options:
    issue: Path
    list_path: Path | None = None
    provider: str | None = None
    outbox: Path | None = None
    state: Path | None = None
    config: Path | None = None
    tag: str | None = None
    suppress: list[Path] = field(default_factory=list)
    dry_run: bool = False
    resend_uncertain: bool = False
    retry_failed: bool = False
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass
class Prepared:
    """Everything a send needs, gathered and validated; nothing sent yet."""

    options: Options
    composed: Composed
    provider: Provider
    state_dir: Path
    notes: list[str]
    secret: bytes
    unsubscribe_template: str | None


def state_dir_for(options: Options, settings_dir: Path) -> Path:
    return options.state if options.state is not None else settings_dir / ".newsletter"


def prepare(options: Options, *, subject_prefix: str = "") -> Prepared:
    """Settings, issue, checks, provider configuration and unsubscribe secret: all or nothing."""
    settings, settings_dir = load_settings(options.config)
    composed = compose(options.issue, settings, settings_dir)
    failed = errors(run_checks(composed))
    if failed:
        raise NewsletterError(f"check failed: {failed[0].message}", path=options.issue,
                              hint="run `newsletter check` for all checks")
    ctx = SendContext(composed=composed, messages=MessageTemplate(composed, subject_prefix=subject_prefix),
                      settings_dir=settings_dir, outbox_dir=options.outbox, subject_prefix=subject_prefix,
                      env=options.env)
    provider = get_provider(options.provider or settings.delivery.provider, ctx)
    state_dir = state_dir_for(options, settings_dir)
    notes: list[str] = []
    template = None
    if provider.unsubscribe_url() is None:
        template = settings.unsubscribe_url
        if template is None:
            raise NewsletterError("no unsubscribe link: set unsubscribe_url in newsletter.toml",
                                  field="unsubscribe_url", hint="every recipient needs a personal one")
    secret = b""
    if template is not None and "token" in template:
        secret, note = unsubscribe.load_secret(state_dir, options.env, create=not options.dry_run)
        if note:
            notes.append(note)
    return Prepared(options, composed, provider, state_dir, notes, secret, template)


def make_recipient(p: Prepared, email: str, name: str, fields: dict[str, str]) -> Recipient:
    """The per-recipient path: raw merge values in field order, with the personal unsubscribe URL."""
    own = p.provider.unsubscribe_url()
    if own is not None:
        url = own
    else:
        url = unsubscribe_link(p.unsubscribe_template or "", email, unsubscribe.token(p.secret, email))
    return Recipient(email, name, p.composed.filler().values(email, name, fields, url))


@dataclass
class Plan:
    """What a send will do, from one full pass over the list against the ledger."""

    to_send: int = 0
    already_sent: int = 0
    held_back: list[str] = field(default_factory=list)
    failed_before: list[str] = field(default_factory=list)
    header_invalid: list[tuple[int, str, str]] = field(default_factory=list)
    skips: object = None
    interrupted: list[str] = field(default_factory=list)


def _decide(state: tuple[str, bool] | None, o: Options) -> str:
    """send | sent | held | failed — one rule for the planning pass and the sending pass."""
    if state is None:
        return "send"
    status, permanent = state
    if status == "sent":
        return "sent"
    if status in ("uncertain", "sending"):
        return "send" if o.resend_uncertain else "held"
    if status == "failed" and permanent and not o.retry_failed:
        return "failed"
    return "send"


class Sender:
    def __init__(self, p: Prepared):
        self.p = p
        o = p.options
        if o.list_path is None:
            raise NewsletterError("no subscriber list: pass --list subscribers.csv")
        local = p.composed.settings.delivery.allow_local_domains
        suppress = read_suppressions(o.suppress, allow_local_domains=local) if o.suppress else frozenset()
        bad = getattr(suppress, "invalid", 0)
        if bad:
            p.notes.append(f"{bad} line(s) of the suppression file(s) are not addresses and were ignored")
        self.subscribers = SubscriberList(o.list_path, tag=o.tag, suppress=suppress, allow_local_domains=local)
        missing = p.composed.filler().missing(self.subscribers.columns)
        if missing:
            raise NewsletterError(
                f"merge field {{{{ {missing[0]} }}}} has no column in {o.list_path} and no default",
                path=o.issue, field=missing[0],
                hint=f'add a "{missing[0]}" column to the list or write {{{{ {missing[0]} | default("…") }}}}')
        self.slug = p.composed.slug
        self.ledger: Ledger | None = None
        self.states: dict[str, tuple[str, bool]] = {}
        self._lock_fd: int | None = None

    def _open_ledger(self) -> None:
        if self.p.options.dry_run:
            path = self.p.state_dir / "ledger.sqlite3"
            if path.exists():
                self.ledger = Ledger(path)
        else:
            self._lock()
            self.ledger = Ledger.in_state(self.p.state_dir)

    def _lock(self) -> None:
        """One send per issue at a time: a second would race the first through the ledger."""
        self.p.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.p.state_dir / f"{self.slug}.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NewsletterError(f"another send of {self.slug} is running", path=path,
                                  hint="wait for it to finish") from None
        self._lock_fd = fd

    def plan(self) -> Plan:
        """The validating pass: the whole list read, checked and matched with the ledger."""
        self._open_ledger()
        plan = Plan()
        if self.ledger is not None:
            if not self.p.options.dry_run:
                plan.interrupted = self.ledger.mark_in_flight_uncertain(self.slug)
            self.states = self.ledger.states(self.slug)
        o = self.p.options
        subject = self.p.composed.subject
        check_subject = bool(subject.slots)
        filler = self.p.composed.filler()
        for sub in self.subscribers:
            if check_subject:
                values = filler.values(sub.email, sub.name, sub.fields, "")
                if any("\r" in values[i] or "\n" in values[i] for i in subject.slots):
                    plan.header_invalid.append((sub.line, sub.email, "line break in a value used in the subject"))
                    continue
            d = _decide(self.states.get(key(sub.email)), o)
            if d == "send":
                plan.to_send += 1
            elif d == "sent":
                plan.already_sent += 1
            elif d == "held":
                plan.held_back.append(sub.email)
            else:
                plan.failed_before.append(sub.email)
        plan.skips = self.subscribers.skips
        self._plan = plan
        return plan

    def _recipients(self) -> Iterator[Subscriber]:
        o = self.p.options
        invalid = {line for line, _, _ in self._plan.header_invalid}
        for sub in self.subscribers:
            if sub.line in invalid:
                continue
            if _decide(self.states.get(key(sub.email)), o) == "send":
                yield sub

    def run(self, progress: Callable[[int], None] | None = None) -> Summary:
        """The sending pass. Each batch: ledger 'sending' → provider → ledger result."""
        p = self.p
        summary = Summary(plan=self._plan, provider=p.provider.name)
        if p.options.dry_run:
            summary.would_send = self._plan.to_send
            return summary
        assert self.ledger is not None
        settings = p.composed.settings.delivery
        provider = p.provider
        provider.open()
        rate = settings.rate
        # With a rate, batches shrink to at most a second's worth so the pace stays even.
        size = min(provider.batch_size, max(1, int(rate))) if rate else provider.batch_size
        started = time.monotonic()
        attempted = 0
        consecutive = 0
        refused = 0  # of the consecutive failures, those refused for good (5xx): need --retry-failed
        batch: list[Recipient] = []

        def flush() -> None:
            nonlocal attempted, consecutive, refused
            if rate:
                wait = started + attempted / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            emails = [r.email for r in batch]
            self.ledger.begin(self.slug, emails, provider.name)
            try:
                results = provider.send(batch)
            except NewsletterError as exc:
                # A provider raises only when the whole batch was refused (nothing delivered).
                self.ledger.finish(self.slug, [Result(e, False, error=exc.message) for e in emails])
                summary.failed += len(emails)
                summary.stopped = exc
                raise
            except BaseException:
                # Interrupted mid-attempt: delivery unknown, so these are held back next time.
                self.ledger.finish(self.slug, [Result(e, False, uncertain=True,
                                                      error="the send was interrupted during this attempt")
                                               for e in emails])
                summary.uncertain += len(emails)
                raise
            self.ledger.finish(self.slug, results)
            attempted += len(batch)
            for r in results:
                if r.ok:
                    summary.sent += 1
                    consecutive = refused = 0
                elif r.uncertain:
                    summary.uncertain += 1
                    summary.uncertain_emails.append(r.email)
                else:
                    summary.failed += 1
                    summary.failures.append((r.email, r.error or "failed"))
                    consecutive += 1
                    refused += bool(r.permanent)
            if progress:
                progress(len(batch))
            batch.clear()
            if consecutive >= settings.max_consecutive_failures:
                last = summary.failures[-1][1] if summary.failures else "failed"
                retry = (f", adding --retry-failed to retry the {refused} refused for good" if refused else "")
                raise NewsletterError(
                    f"stopped after {consecutive} failures in a row (last: {last}); "
                    f"fix the cause, then resume with the same `newsletter send` command{retry}",
                    path=p.options.issue, exit_code=1)

        try:
            for sub in self._recipients():
                batch.append(make_recipient(p, sub.email, sub.name, sub.fields))
                if len(batch) >= size:
                    flush()
            if batch:
                flush()
        except NewsletterError as exc:
            exc.summary = summary  # what went out before the send stopped, for the CLI to show
            raise
        finally:
            provider.close()
        return summary

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


@dataclass
class Summary:
    plan: Plan
    provider: str
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    would_send: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    uncertain_emails: list[str] = field(default_factory=list)
    stopped: NewsletterError | None = None


def test_recipients(p: Prepared, to: list[str], as_email: str | None) -> tuple[list[Recipient], str]:
    """Recipients for test-send: each --to (or test_recipient), personalised as one subscriber."""
    from newsletter_mailer.addresses import normalise

    settings = p.composed.settings
    targets = to or ([settings.test_recipient] if settings.test_recipient else [])
    if not targets:
        raise NewsletterError("no test recipient: pass --to ADDR or set test_recipient in newsletter.toml")
    addrs = []
    for t in targets:
        try:
            addrs.append(normalise(t))
        except ValueError as exc:
            raise NewsletterError(str(exc), field="--to") from None
    name, fields, who_email = "", {}, None
    if p.options.list_path is not None:
        subs = SubscriberList(p.options.list_path)
        wanted = as_email.lower() if as_email else None
        for sub in subs:
            if wanted is None or sub.email.lower() == wanted:
                name, fields, who_email = sub.name, sub.fields, sub.email
                break
        else:
            if wanted:
                raise NewsletterError(f"{as_email} is not a subscriber on the list", path=p.options.list_path,
                                      field="--as")
    elif as_email:
        who_email = as_email
    missing = p.composed.filler().missing(frozenset(fields))
    recipients = []
    for a in addrs:
        r = make_recipient(p, who_email or a, name, fields)
        r.email, r.name = a, ""  # addressed to the tester, personalised as the subscriber
        recipients.append(r)
    who = who_email or ("the defaults" if not missing else "the defaults (no value for " + ", ".join(missing) + ")")
    return recipients, who
