"""Send an issue to the list: gather and check everything, then deliver, recording each step.

Like pelican gathers before it writes, nothing is sent until the settings, the issue,
its checks, the whole list, the merge fields, the provider's configuration and the
ledger have all been read and found good. Then recipients stream from the list a
second time (a million rows are never held in memory), in provider-sized batches:
ledger 'sending' → provider → ledger 'sent'/'failed'.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Mapping

from newsletter_mailer import ab_test, tokens, tracked_links, unsubscribe
from newsletter_mailer.audience import clicks
from newsletter_mailer.checks import failures, run_checks
from newsletter_mailer.checks.variants import variant_checks
from newsletter_mailer.conditions import check_columns
from newsletter_mailer.compose import UNSUBSCRIBE, Composed, compose
from newsletter_mailer.errors import NewsletterError, unreadable
from newsletter_mailer.state import send_lock
from newsletter_mailer.state.db import ERRORS as db_errors
from newsletter_mailer.state.db import unreachable
from newsletter_mailer.state.handle import State
from newsletter_mailer.ledger import Ledger, Row, key
from newsletter_mailer.message import MessageTemplate, unsubscribe_link
from newsletter_mailer.mergefields import url_placeholders
from newsletter_mailer.personalise import Template, make_recipient
from newsletter_mailer.providers.base import Crowded
from newsletter_mailer.providers import (Content, Outcome, Provider, Recipient, SendContext, get_provider,
                                         provider_class)
from newsletter_mailer.schedule import CannotHold, When, alternatives, check_hold, parse_at
from newsletter_mailer.schema import slug_of
from newsletter_mailer.audience.in_send import SendAudience
from newsletter_mailer.dkim_signing import signer_for
from newsletter_mailer.settings import Settings, load_settings
from newsletter_mailer.subscribers import Skips, Subscriber, SubscriberList, read_suppressions
from newsletter_mailer.validators import header_problem
from newsletter_mailer.variants import Editions, Variant

TEST_PREFIX = "[TEST] "
AB_FIELD = "ab_subject"  # a subject test's per-reader subject (ab_test.py): the last field


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
    sync: bool = True   # a SendGrid send first pulls SendGrid's suppressions into the store
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    at: str | None = None       # send --at: when the provider should deliver (it holds the mail)
    tz: str | None = None       # the zone --at is written in (default: settings' timezone, else the machine's)
    resend_cancelled: bool = False  # send again to those whose scheduled send was cancelled
    strict: bool = False        # an invalid row of --list stops the send (else it is skipped and listed)
    ab: ab_test.Request | None = None  # send --ab-subject/--sample/--wait or --finish-ab: a subject test
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)


@dataclass
class Prepared:
    """Everything a send needs, gathered and validated; nothing sent yet."""

    options: Options
    composed: Composed
    provider: Provider
    state: State                            # where the ledger, the store and the lock live: resolved once
    notes: list[str]
    links: ReaderLinks                      # each address's unsubscribe link (and token), decided once
    new_message_id: Callable[[], str] | None = None  # MIME providers: the id is chosen before the attempt
    when: When | None = None    # a scheduled send: the provider holds the mail until then
    warnings: list[str] = field(default_factory=list)  # the checks' warnings and the issue's date: shown before asking
    editions: Editions | None = None        # the issue composed once per variant (for: on sections)
    provider_for: Callable[[Composed], Provider] | None = None  # another variant's provider, same settings
    track: Callable[..., str] | None = None  # [tracking]: the reader's half of every tracked link (one a message)
    ab_b: str = ""      # a subject test: B's subject (A's is composed.subject_a)
    link_ids: tracked_links.SendLinks | None = None  # [tracking]: every edition's links by id, stored before sending

    @property
    def ab_subject(self) -> Template | None:
        """A subject test: the issue's own subject (A); None without a test."""
        return self.composed.subject_a

    def variants(self) -> Editions:
        """The issue per variant, of `composed` as it is now (one replaced since is composed anew, and
        finished as the send finishes every edition)."""
        e = self.editions
        if e is None or e.full is not self.composed:
            e = self.editions = Editions(self.composed, e.settings_dir if e is not None else None,
                                         e.finish if e is not None else None)
        return e

    def recipient(self, email: str, name: str, fields: Mapping[str, str], link_for: str | None = None,
                  composed: Composed | None = None, variant: str | None = None,
                  sampled: str | None = None) -> Recipient:
        """One recipient's values (of `composed`, their audience's edition; default the whole issue);
        a subject test's reader gets the subject of their A/B `variant` in the subject slot. Only a
        reader of the test's sample carries their variant (`sampled`) on their tracked links and
        provider events: the winner's readers after the finish do not count for the test."""
        r = self._recipient(email, name, fields, link_for, composed, sampled)
        a = (composed or self.composed).subject_a
        if a is not None:
            r.values[-1] = self.ab_b if variant == "B" else a.fill(r.values)
        r.ab = sampled
        return r

    def _recipient(self, email: str, name: str, fields: Mapping[str, str], link_for: str | None = None,
                   composed: Composed | None = None, sampled: str | None = None) -> Recipient:
        """The unsubscribe link and token are `link_for`'s when given (a test mail personalised as a
        subscriber must never carry that subscriber's way out)."""
        msgid = self.new_message_id() if self.new_message_id is not None else None
        owner = link_for or email
        token = self.links.token(owner) if self.links.token is not None else None
        tracked = self.track(owner, sampled) if self.track is not None else ""
        return make_recipient((composed or self.composed).filler(), self.links.url(owner, token), email, name,
                              fields, msgid, token, tracked)


def state_for(options: Options, settings: Settings, settings_dir: Path) -> State:
    """The one state handle of this command (--state, the settings, NEWSLETTER_DATABASE_URL)."""
    return State.resolve(settings, settings_dir, options.env, options.state)


def outbox_for(options: Options, settings_dir: Path) -> Path:
    """--outbox, else outbox/ next to newsletter.toml: like the state, not wherever the command runs."""
    return options.outbox if options.outbox is not None else settings_dir / "outbox"


def prepare(options: Options, *, subject_prefix: str = "") -> Prepared:
    """Settings, issue, checks, provider configuration and unsubscribe secret: all or nothing."""
    settings, settings_dir = load_settings(options.config, options.issue)
    composed = compose(options.issue, settings, settings_dir)
    checks = run_checks(composed, variants=False)  # the variants are checked against the list (Sender.plan)
    failed = failures(checks)
    if failed:  # exit 1 as `check` gives for it; a setting's problem names newsletter.toml
        raise NewsletterError(f"check failed: {failed[0].message}",
                              path=settings.file if failed[0].in_settings else options.issue,
                              hint=f"`newsletter check {options.issue}` shows every check", exit_code=1)
    warnings = [k.message for k in checks if k.level == "warning"] + _unpublished(composed, options.now())
    state = state_for(options, settings, settings_dir)
    provider_name = options.provider or settings.delivery.provider
    composed, track, link_ids = (_tracking(options, composed, provider_name, state) if not subject_prefix
                                 else (composed, None, None))
    ab_test_on = options.ab is not None and not subject_prefix
    ab_b = ""
    if ab_test_on:
        ab_b = _subject_test(options, composed, provider_name)
        composed = _subject_slot(composed)
    editions = Editions(composed, settings_dir, _finishing(link_ids, ab_test_on))
    outbox = outbox_for(options, settings_dir)
    ctx = send_context(composed, outbox=outbox, subject_prefix=subject_prefix, env=options.env)
    provider = get_provider(provider_name, ctx)
    ctx.sign, dkim_note = signer_for(settings.delivery.dkim, provider.name, options.env)  # the key checked first

    def provider_for(c: Composed) -> Provider:
        """A variant's provider: the same kind, settings and DKIM signer, its own content."""
        vctx = send_context(c, outbox=outbox, subject_prefix=subject_prefix, env=options.env)
        vctx.sign = ctx.sign
        return get_provider(provider.name, vctx)
    when = _when(options, settings, provider)
    if options.dry_run and provider.name == "sendgrid":
        provider.open()  # its key checked as the send would (no network): a dry run stops where a send would
    notes: list[str] = [dkim_note] if dkim_note else []
    links = _unsubscribe_source(options, settings, provider.name, state, notes, composed.slug)
    if provider.name == "sendgrid" and settings.delivery.return_path:
        notes.append("delivery.return_path (and verp) ignored: SendGrid sends with its own return path "
                     "(set one up in SendGrid: Sender Authentication, custom return path)")
    new_id = ctx.messages.new_message_id if provider.own_message_id else None
    return Prepared(options, composed, provider, state, notes, links, new_id, when, warnings,
                    editions, provider_for, track, ab_b, link_ids)


def _finishing(links: tracked_links.SendLinks | None, subject_test: bool) -> Callable[[Composed], Composed] | None:
    """What prepare did to the whole issue, for each audience's edition (for: on sections): its links
    baked with the whole issue's ids, and the subject test's slot. None: nothing to do."""
    if links is None and not subject_test:
        return None

    def finish(c: Composed) -> Composed:
        c = links.bake(c) if links is not None else c
        return _subject_slot(c) if subject_test else c
    return finish


def _subject_test(options: Options, composed: Composed, provider_name: str) -> str:
    """B's subject, checked. The winner is chosen by [tracking] ab_winner, so something must count it."""
    settings = composed.settings
    _ab_metric_counted(settings, provider_name)
    b = options.ab.subject_b or ""
    if b and (header_problem(b) or "{{" in b or "}}" in b):
        raise NewsletterError(f"--ab-subject {header_problem(b) or 'may not hold merge fields'}", field="--ab-subject",
                              hint="one line of plain text")
    return b


def _subject_slot(composed: Composed) -> Composed:
    """The issue (or an edition) with its subject as one more per-reader slot, the last field (A's
    subject filled, or B's text: Prepared.recipient); its own subject kept as subject_a."""
    from newsletter_mailer.mergefields import Field

    n = len(composed.fields)
    return replace(composed, fields=composed.fields + (Field(AB_FIELD, ""),), subject=Template(("", ""), (n,)),
                   subject_a=composed.subject)


def _ab_metric_counted(settings: Settings, provider_name: str) -> None:
    """[tracking] ab_winner needs a source: our own counting, or SendGrid's tracking when SendGrid sends."""
    metric, t = settings.tracking.ab_winner, settings.tracking
    ours = t.clicks if metric == "clicks" else t.opens
    sg = settings.delivery.sendgrid.tracking
    if ours or (provider_name == "sendgrid" and (sg.click if metric == "clicks" else sg.open)):
        return
    own = "clicks" if metric == "clicks" else "opens"
    theirs = "click" if metric == "clicks" else "open"
    raise NewsletterError(f"a subject test picks its winner by {metric} ([tracking] ab_winner) and nothing counts "
                          f"them: set [tracking] {own} = true"
                          + (f" (or [delivery.sendgrid.tracking] {theirs} = true)" if provider_name == "sendgrid" else ""),
                          path=settings.file, field=f"tracking.{own}", hint="see docs/clicks.md")


def _sendgrid_tracking(p: Prepared) -> tuple[tuple[str, ...], bool] | None:
    """SendGrid's own tracking on this send: (the issue's links as sent, opens counted), for the
    webhook to count its events per link; None when SendGrid does not track this send."""
    if p.provider.name != "sendgrid" or p.track is not None:
        return None
    sg = p.composed.settings.delivery.sendgrid.tracking
    if not (sg.click or sg.open):
        return None
    from newsletter_mailer.compose import links_as_sent

    return (links_as_sent(p.composed) if sg.click else ()), sg.open


def _tracking(options: Options, composed: Composed, provider_name: str, state: State
              ) -> tuple[Composed, Callable[[str], str] | None, tracked_links.SendLinks | None]:
    """[tracking] clicks/opens: each link's per-send half written into the issue once (tracked_links.bake),
    the seal that makes a reader's half, and the send's link ids (each audience's edition baked with
    them too: _finishing). Our counting and SendGrid's would wrap each other's links.
    A test send (subject prefix) is not tracked: its links are the issue's own."""
    settings = composed.settings
    t = settings.tracking
    if not (t.clicks or t.opens):
        return composed, None, None
    if provider_name == "sendgrid" and (settings.delivery.sendgrid.tracking.click or
                                        settings.delivery.sendgrid.tracking.open):
        raise NewsletterError("[tracking] and SendGrid's own tracking are both on: links would be wrapped twice",
                              path=settings.file, field="delivery.sendgrid.tracking",
                              hint="turn one of them off in newsletter.toml")
    secret, _ = state.secret(options.env, create=not options.dry_run)
    list_id = state.list_ids(settings, record=not options.dry_run)[0]
    slug = composed.slug
    links = _send_links(state, composed, secret, list_id)
    baked = links.bake(composed)
    if not t.per_reader:  # the server never needs the address: a keyed pseudonym, two short hashes a message
        return baked, tokens.click_pseudonym_maker(secret, list_id, slug), links
    make = tokens.make_click_reader
    return baked, lambda email, variant=None: make(secret, list_id, slug, email, variant), links


def _send_links(state: State, composed: Composed, secret: bytes, list_id: str) -> tracked_links.SendLinks:
    """The send's link ids: the whole issue's, then those an earlier run gave links only an edition has."""
    store = state.audience(create=False)
    try:
        stored = clicks.stored(store.db, composed.slug) if store is not None else []
    finally:
        if store is not None:
            store.close()
    t = composed.settings.tracking
    return tracked_links.SendLinks(secret, list_id, composed.slug, composed.settings.web.base or "", t.opens,
                                   composed.tracked_links, stored, per_reader=t.per_reader)


def _unpublished(composed: Composed, now: datetime) -> list[str]:
    """An issue `publish` leaves out has no web copy yet: its "view in browser" link is broken until then."""
    issue, today = composed.issue, now.astimezone().date()
    if issue.date > today:
        return [f"the issue is dated {issue.date.isoformat()}, after today: publish skips it unless --drafts, "
                "so its web copy link will not work until then"]
    if issue.draft:
        return ["the issue is a draft (draft: true): publish skips it unless --drafts, "
                "so its web copy link will not work until it is published"]
    return []


def _when(options: Options, settings: Settings, provider: Provider) -> When | None:
    """--at read and checked against the provider: one that cannot hold mail gets the command
    to run at that time instead; SendGrid's 72 hours are checked before anything is sent."""
    if options.at is None:
        if options.tz is not None:
            raise NewsletterError("--tz without --at", field="--tz", hint="add --at TIME, or leave --tz out")
        return None
    now = options.now()
    when = parse_at(options.at, options.tz, settings.timezone, now)
    if provider.hold_limit is None:
        raise CannotHold(provider.label, alternatives(when, same_send(options), Path.cwd()))
    check_hold(when, now, provider.hold_limit, provider.label)
    return when


def same_send(o: Options) -> list[str]:
    """This send as `newsletter` arguments, without --at and with --yes: what a timer should run."""
    args = ["send", str(o.issue)]
    for flag, value in (("--list", o.list_path), ("--provider", o.provider), ("--outbox", o.outbox),
                        ("--state", o.state), ("--config", o.config), ("--tag", o.tag)):
        if value is not None:
            args += [flag, str(value)]
    for path in o.suppress:
        args += ["--suppress", str(path)]
    if o.ab is not None:  # a subject test resumes as itself
        if o.ab.subject_b:
            args += ["--ab-subject", o.ab.subject_b, "--sample", f"{o.ab.share:.6g}"]
        if o.ab.finish:
            args += ["--finish-ab"]
    args += [flag for flag, on in (("--resend-uncertain", o.resend_uncertain), ("--retry-failed", o.retry_failed),
                                   ("--resend-cancelled", o.resend_cancelled), ("--no-sync", not o.sync),
                                   ("--strict", o.strict)) if on]
    return args + ["--yes"]


def send_context(composed: Composed, *, outbox: Path | None = None, subject_prefix: str = "",
                 env: Mapping[str, str] | None = None) -> SendContext:
    """What a provider gets: the composed issue cut down to strings and parts-and-slots."""
    subject = composed.subject
    if subject_prefix:
        subject = Template((subject_prefix + subject.parts[0], *subject.parts[1:]), subject.slots)
    unsub = next((i for i, f in enumerate(composed.fields) if f.name == UNSUBSCRIBE), None)
    content = Content(slug=composed.slug, subject=subject, html=composed.html, text=composed.text,
                      default_subject=subject.fill(composed.filler().defaults()), unsubscribe_slot=unsub)
    messages = MessageTemplate(composed, subject_prefix=subject_prefix)
    return SendContext(content=content, settings=composed.settings, messages=messages, outbox_dir=outbox,
                       subject_prefix=subject_prefix, env=dict(os.environ) if env is None else env)


def own_unsubscribe(settings: Settings, provider_name: str) -> str | None:
    """A provider-made unsubscribe link, the same for everyone (SendGrid's ASM group), or None."""
    if provider_name == "sendgrid" and settings.delivery.sendgrid.asm_group_id is not None:
        from newsletter_mailer.providers.sendgrid import ASM_UNSUBSCRIBE_TAG

        return ASM_UNSUBSCRIBE_TAG
    return None


@dataclass(frozen=True)
class ReaderLinks:
    """How each reader's way out is made, decided once per send: `token` seals the address (and
    the issue) for this project's app and for the mailto subject the inbox reader checks; `url`
    makes the link from the address and that token."""

    url: Callable[[str, str | None], str]
    token: Callable[[str], str] | None = None


def _unsubscribe_source(options: Options, settings: Settings, provider_name: str, state: State,
                        notes: list[str], slug: str) -> ReaderLinks:
    """Where every recipient's unsubscribe link comes from: the provider's own; the settings'
    unsubscribe_url filled per address (with an HMAC token when it asks for one); or, with
    [web] base_url, this project's app: <base_url>/u/<sealed address and issue>. With
    unsubscribe_mailto the mailto's subject carries the sealed token too (`newsletter inbox`)."""
    own = own_unsubscribe(settings, provider_name)
    if own is not None:
        return ReaderLinks(lambda email, token: own)
    template = settings.unsubscribe_url
    if template is None and settings.web.base is None:
        raise NewsletterError("no unsubscribe link: set [web] base_url (or unsubscribe_url) in newsletter.toml",
                              field="web.base_url", hint="every recipient needs a personal one")
    hmac = template is not None and "token" in url_placeholders(template)
    sealed = template is None or settings.unsubscribe_mailto or settings.delivery.verp  # VERP: bounces+<token>@
    secret = b""
    if sealed or hmac:
        secret, note = state.secret(options.env, create=not options.dry_run)
        if note:
            notes.append(note)
    seal = None
    if sealed:
        list_id = state.list_ids(settings, record=not options.dry_run)[0]  # a changed id: refused
        make = tokens.make_unsubscribe
        seal = lambda email: make(secret, list_id, email, slug)  # noqa: E731 - one seal a reader
    if template is None:  # the app (web.py) opens it: its secret and list id, no address in the link
        prefix = f"{settings.web.base}/u/"
        return ReaderLinks(lambda email, token: prefix + token, seal)
    if hmac:
        return ReaderLinks(lambda email, token: unsubscribe_link(template, email, unsubscribe.token(secret, email)),
                           seal)
    return ReaderLinks(lambda email, token: unsubscribe_link(template, email, ""), seal)


@dataclass
class Plan:
    """What a send will do, from one full pass over the list against the ledger."""

    to_send: int = 0
    already_sent: int = 0
    held_back: list[str] = field(default_factory=list)
    failed_before: list[str] = field(default_factory=list)
    header_invalid: list[tuple[int, str, str]] = field(default_factory=list)
    unsafe_links: Skips = field(default_factory=Skips)  # a value that would make a link javascript:, …
    skips: object = None
    interrupted: list[str] = field(default_factory=list)
    signups: int = 0   # confirmed sign-ups from the audience store, not in the CSV, to send
    variants: dict[str, int] = field(default_factory=dict)  # readers to send, per variant name
    cancelled: int = 0  # whose scheduled send was cancelled: sent again only with --resend-cancelled
    ab_later: int = 0   # a subject test's first run: the readers left for its finish
    ab_lines: list[str] = field(default_factory=list)  # what the subject test is doing, said before the send


def _decide(state: tuple[str, bool] | None, o: Options) -> str:
    """send | sent | held | failed | cancelled — one rule for the planning pass and the sending pass.
    A scheduled recipient was handed over (the provider holds it): as good as sent."""
    if state is None:
        return "send"
    status, permanent = state
    if status in ("sent", "scheduled"):
        return "sent"
    if status == "cancelled":
        return "send" if o.resend_cancelled else "cancelled"
    if status in ("uncertain", "sending"):
        return "send" if o.resend_uncertain else "held"
    if status == "failed" and permanent and not o.retry_failed:
        return "failed"
    return "send"


def _refuse_invalid_rows(plan: Plan, list_path: Path | None) -> None:
    """send --strict: a row that cannot be sent as written is an error before anything goes out.
    Rows left out on purpose (unsubscribed, duplicate, suppressed, not tagged) are not."""
    bad = ((plan.skips.lines.get("invalid", []) if plan.skips is not None else [])
           + [line for line, _, _ in plan.header_invalid]
           + [line for lines in plan.unsafe_links.lines.values() for line in lines])
    count = ((plan.skips.counts.get("invalid", 0) if plan.skips is not None else 0)
             + len(plan.header_invalid) + plan.unsafe_links.total())
    if count:
        lines = sorted(bad)
        detail = plan.skips.details.get(lines[0]) if plan.skips is not None else None
        raise NewsletterError(f"{count} invalid row(s) (line{'s' if count > 1 else ''} "
                              + ", ".join(map(str, lines[:10])) + (" …" if count > 10 else "") + ")"
                              + (f"; line {lines[0]}: {detail}" if detail else ""),
                              path=list_path, line=lines[0], hint="fix or remove them, or leave out --strict "
                                                                  "to skip them; nothing was sent")


def _sync_from_sendgrid(p: Prepared) -> str:
    """SendGrid's suppressions into the store before planning, so nobody SendGrid suppressed is
    even attempted. A failure stops the send before anything goes out (--no-sync skips it)."""
    from newsletter_mailer.audience.sendgrid_sync import KeyRefused, sync

    p.provider.open()  # the key first (no network): without one, --no-sync would not help either
    store = p.state.audience()
    try:
        report = sync(p.composed.settings, store, p.options.env)
    except KeyRefused as exc:
        # A key made for Mail Send only cannot read suppressions: SendGrid still drops the
        # addresses it suppressed, so the send goes on, and says so (a wrong key stops at mail/send).
        return (f"SendGrid's suppressions not synced: {exc.message}; SendGrid still drops what it "
                "suppressed. Give the key 'Suppressions: read' access, or pass --no-sync")
    except NewsletterError as exc:
        exc.hint = (exc.hint + "; " if exc.hint else "") + "or send without it: --no-sync"
        raise
    finally:
        store.close()
    return f"synced SendGrid's suppressions first: {report.changed} change(s) recorded"


class Sender:
    """One send of one issue: plan() reads the list against the ledger, run(plan) delivers.

    Holds the ledger and the per-issue lock between the two passes: close() releases them.
    """

    def __init__(self, p: Prepared):
        self.p = p
        o = p.options
        if p.provider.name == "sendgrid" and o.sync and not o.dry_run:
            p.notes.append(_sync_from_sendgrid(p))
        self.url = p.state.url  # None: SQLite files in the state folder
        self.audience = SendAudience(p.state, dry_run=o.dry_run)
        if o.list_path is None and not self.audience.signups:
            self.audience.close()
            raise NewsletterError("no subscriber list: pass --list subscribers.csv "
                                  "(the audience store has no confirmed sign-ups)")
        local = p.composed.settings.delivery.allow_local_domains
        suppress = read_suppressions(o.suppress, allow_local_domains=local) if o.suppress else frozenset()
        bad = getattr(suppress, "invalid", 0)
        if bad:
            p.notes.append(f"{bad} line(s) of the suppression file(s) are not addresses and were ignored")
        self.suppress = suppress
        self.subscribers = (SubscriberList(o.list_path, tag=o.tag, suppress=suppress, allow_local_domains=local)
                            if o.list_path is not None else None)
        columns = self.subscribers.columns if self.subscribers is not None else frozenset()
        self.editions = p.variants()
        if self.subscribers is not None:
            check_columns(self.editions.audiences.located(), columns, o.issue, o.list_path)
        missing = p.composed.filler().missing(columns)
        if missing:
            self.audience.close()
            raise NewsletterError(
                f"merge field {{{{ {missing[0]} }}}} has no column in {o.list_path or 'the list'} and no default",
                path=o.issue, field=missing[0],
                hint=f'add a "{missing[0]}" column to the list or write {{{{ {missing[0]} | default("…") }}}}')
        self.slug = p.composed.slug
        self.ledger: Ledger | None = None
        self.states: dict[str, tuple[str, bool]] = {}
        self._lock: send_lock.SendLock | None = None
        self.summary: Summary | None = None  # the run's counts so far (run() sets it)
        self._batch_id: str | None = None  # a scheduled send's batch, which every variant's provider joins
        self._links_stored = 0  # how many of p.link_ids' links are in the store (_store_links)
        self.ab_mode: str | None = None  # a subject test: "draw" (new), "sample" (its first run), "finish"
        self.ab: ab_test.Test | None = None
        self.ab_variants: dict[str, str] = {}

    def _subject_test(self) -> None:
        """Which part of a subject test this run is, from the request and the ledger; the winner
        chosen (once, recorded) when the finish is asked for or the wait is over."""
        o, slug = self.p.options, self.slug
        test = ab_test.load(self.ledger.db, slug) if self.ledger is not None else None
        req = o.ab
        if test is None:
            if req is None:
                return
            if req.finish:
                raise NewsletterError(f"no subject test of {slug} to finish", path=o.issue,
                                      hint="start one with --ab-subject \"Other subject\" --sample 20%")
            self.ab_mode = "draw"
            return
        if req is None:
            raise NewsletterError(f"a subject test of {slug} is under way: finish it with --finish-ab", path=o.issue,
                                  hint=f"newsletter send {o.issue} --finish-ab (with this command's --list)")
        if req.subject_b and req.subject_b != test.subject_b:
            raise NewsletterError(f"a subject test of {slug} with another subject is under way ('{test.subject_b}')",
                                  field="--ab-subject", hint="finish it with --finish-ab")
        self.ab, self.ab_variants = test, ab_test.variants(self.ledger.db, slug)
        self.p.ab_b = test.subject_b
        now = int(o.now().timestamp())
        if test.winner is None and (req.finish or (test.wait_until is not None and now >= test.wait_until)):
            metric = self.p.composed.settings.tracking.ab_winner
            store = self.audience.store
            clicked = clicks.variant_clickers(store.db, slug, metric) if store else {"A": 0, "B": 0}
            sent = ab_test.sample_results(self.ledger.db, slug)
            winner, verdict = ab_test.decide(clicked["A"], sent["A"], clicked["B"], sent["B"], metric)
            self.ab = (ab_test.choose(self.ledger.db, slug, winner, verdict) if not o.dry_run
                       else replace(test, winner=winner, verdict=verdict))
        self.ab_mode = "finish" if self.ab.winner is not None else "sample"

    def _draw(self, eligible: list[str], plan: Plan) -> None:
        """A new test: the sample drawn and recorded (before anything is sent), the rest left for the finish."""
        o = self.p.options
        draw = ab_test.split(eligible, o.ab.share, ab_test.new_seed())
        if not o.dry_run:
            self.ab = ab_test.start(self.ledger.db, self.slug, o.ab, draw, int(o.now().timestamp()))
        else:
            self.ab = ab_test.Test(self.slug, o.ab.subject_b or "", o.ab.share, None, None, None)
        self.ab_variants, self.ab_mode = draw, "sample"
        plan.to_send -= len(eligible) - len(draw)
        plan.ab_later = len(eligible) - len(draw)
        self.p.ab_b = self.ab.subject_b

    def _say_test(self, plan: Plan) -> None:
        if self.ab is None:
            return
        t, half = self.ab, sum(v == "A" for v in self.ab_variants.values())
        plan.ab_lines.append(f"subject test: A (the issue's) to {half}, B '{t.subject_b}' to "
                             f"{len(self.ab_variants) - half} of a {t.share:.0%} sample")
        if self.ab_mode == "finish":
            plan.ab_lines.append(f"winner: {t.winner}: {t.verdict}")
            plan.ab_lines.append(f"sending {'B' if t.winner == 'B' else 'A'}'s subject to everyone else")
        else:
            when = (datetime.fromtimestamp(t.wait_until, timezone.utc).isoformat(timespec="minutes")
                    if t.wait_until else None)
            plan.ab_lines.append(f"{plan.ab_later} wait for the finish: newsletter send {self.p.options.issue} "
                                 "--finish-ab" + (f" (or this command again after {when})" if when else ""))

    def _open_ledger(self) -> None:
        """The ledger, locked for this issue; a dry run only reads one if it exists."""
        if self.p.options.dry_run:
            self.ledger = self.p.state.ledger(create=False)
        else:
            # One send per issue at a time (a second would race the first through the ledger).
            self.ledger = self.p.state.ledger()  # first: its schema is checked
            self._lock = self.p.state.send_lock(self.slug)

    def plan(self) -> Plan:
        """The validating pass: the whole list read, checked and matched with the ledger."""
        self._open_ledger()
        plan = Plan()
        if self.ledger is not None:
            if not self.p.options.dry_run:
                plan.interrupted = self.ledger.mark_in_flight_uncertain(self.slug)
            self.states = self.audience.ledger_states(self.ledger.states(self.slug))
        o = self.p.options
        self._subject_test()
        eligible: list[str] | None = [] if self.ab_mode == "draw" else None
        variant_of, composed = self.editions.audiences.of, self.editions.composed
        seen: Counter[Variant] = Counter()
        for sub in self._candidates():
            variant = variant_of(sub)
            seen[variant] += 1
            c = composed(variant)  # composed once per variant, on its first reader
            subject, filler = (c.subject_a or c.subject), c.filler()
            if subject.slots or filler.links:
                values = filler.values(sub.email, sub.name, sub.fields, "")
                problem = next(filter(None, (header_problem(values[i]) for i in subject.slots)), None)
                if problem:
                    plan.header_invalid.append((sub.line, sub.email, f"a value used in the subject {problem}"))
                    continue
                column = filler.unsafe_link(values)
                if column:
                    plan.unsafe_links.add(f"unsafe link value in column {column}", sub.line)
                    continue
            d = _decide(self.states.get(key(sub.email)), o)
            if d == "send" and self.ab_mode is not None and self.ab_mode != "finish":
                if eligible is not None:  # a new test: drawn from everyone who would be sent
                    eligible.append(key(sub.email))
                elif key(sub.email) not in self.ab_variants:  # the sample's run: the rest wait for the finish
                    plan.ab_later += 1
                    continue
            if d == "send":
                plan.to_send += 1
                plan.signups += not sub.line
                plan.variants[variant.name] = plan.variants.get(variant.name, 0) + 1
            elif d == "sent":
                plan.already_sent += 1
            elif d == "held":
                plan.held_back.append(sub.email)
            elif d == "cancelled":
                plan.cancelled += 1
            else:
                plan.failed_before.append(sub.email)
        if eligible is not None:
            self._draw(eligible, plan)
        self._say_test(plan)
        plan.skips = self.subscribers.skips if self.subscribers is not None else None
        self._check_variants(seen)
        if o.strict:
            _refuse_invalid_rows(plan, o.list_path)
        if plan.cancelled:
            raise NewsletterError(f"{plan.cancelled} recipient(s) had this issue's scheduled send cancelled: "
                                  "a send to them again must be on purpose", path=o.issue,
                                  hint="add --resend-cancelled to send to them too")
        return plan

    def _check_variants(self, seen: Counter[Variant]) -> None:
        """An empty variant stops the send (as `check` fails it); a section nobody gets is a warning."""
        o = self.p.options
        checks = variant_checks(self.editions.audiences, seen, o.list_path.name if o.list_path else "the list")
        failed = failures(checks)
        if failed:
            raise NewsletterError(f"check failed: {failed[0].message}", path=o.issue, exit_code=1,
                                  hint=f"`newsletter check {o.issue} --list …` shows every check")
        self.p.warnings += [k.message for k in checks if k.level == "warning"]

    def _candidates(self) -> Iterator[Subscriber]:
        """One pass: the CSV's subscribers the store has not suppressed (those are counted in the
        pass's skips, with their lines), then the store's sign-ups the CSV does not have."""
        claimed: set[str] = set()
        if self.subscribers is not None:
            skip_reason = self.audience.skip_reason
            for sub in self.subscribers:
                reason = skip_reason(key(sub.email))
                if reason is None:
                    yield sub
                else:
                    self.subscribers.skips.add(reason, sub.line)
            claimed = self.subscribers.claimed
        yield from self.audience.signed_up(claimed, self.p.options.tag, self.suppress)

    def _recipients(self, plan: Plan) -> Iterator[tuple[Variant, Recipient]]:
        """The sending pass over the list: the subscribers the plan counted as to send, each with
        their variant (decided again from the same row: the same one the plan saw)."""
        o = self.p.options
        invalid = {key(email) for _, email, _ in plan.header_invalid}
        make, variant_of, composed = self.p.recipient, self.editions.audiences.of, self.editions.composed
        ab_of, finish = self.ab_variants, self.ab_mode == "finish"
        for sub in self._candidates():
            k = key(sub.email)
            if k not in invalid and _decide(self.states.get(k), o) == "send":
                sampled = ab_of.get(k)
                ab = sampled or (self.ab.winner if finish else None)
                if self.ab_mode is not None and ab is None:
                    continue  # the sample's run: the rest wait for the finish
                v = variant_of(sub)
                c = composed(v)
                r = make(sub.email, sub.name, sub.fields, composed=c, variant=ab, sampled=sampled)
                if c.filler().unsafe_link(r.values) is None:  # skipped in the plan: its own check, not a set kept
                    yield v, r

    def run(self, plan: Plan, progress: Callable[[int], None] | None = None,
            in_flight: Callable[[], ContextManager[None]] = nullcontext) -> Summary:
        """The sending pass, batch by batch; a stop raises DeliveryStopped with what went out.
        Each batch runs inside in_flight() (stopping.StopOnSignals holds a Ctrl-C until it is
        recorded); self.summary counts what went out, also when a signal stops the run."""
        p = self.p
        summary = self.summary = Summary(plan=plan, provider=p.provider.name, when=p.when)
        if p.options.dry_run:
            summary.would_send = plan.to_send
            return summary
        assert self.ledger is not None
        self._store_links()
        sendgrid_tracked = _sendgrid_tracking(p)
        if sendgrid_tracked is not None:  # SendGrid's click and open events are counted per link as sent
            clicks.store_links(self.audience.store.db, self.slug, sendgrid_tracked[0], pixel=sendgrid_tracked[1])
        delivery = p.composed.settings.delivery
        provider = p.provider
        provider.open()
        pace = _Pace(delivery.rate)
        size = pace.batch_size(provider.batch_size)
        providers = {id(p.composed): provider}  # one per variant: a request's (or message's) content is its own
        # Several connections (send_pool.py) carry one content: an issue with variants goes one batch at a time.
        pooled = getattr(provider, "pool_size", 1) > 1 and not self.editions.audiences.conditional
        try:
            batch_id = self._batch_id = self._schedule() if p.when is not None else None
            if pooled:
                self._run_pooled(plan, summary, pace, size, progress, in_flight)
                return summary
            for variant, batch in _chunks(self._recipients(plan), size):
                pace.wait()
                batch, left = self.audience.still_wanted(batch)
                summary.unsubscribed_during += left
                if batch:
                    prov = self._provider(providers, variant)
                    with in_flight():
                        deliver_batch(self.ledger, self.slug, prov, batch, summary, batch_id,
                                      variant.name if self.editions.audiences.conditional else None)
                pace.done(len(batch))
                if progress:
                    progress(len(batch) + left)
                if summary.in_a_row >= delivery.max_consecutive_failures:
                    raise _too_many_failures(summary, p.options.issue)
        except NewsletterError as exc:
            raise DeliveryStopped(exc, summary) from exc
        except db_errors as exc:  # the database went away (restarted, unreachable) mid-send
            raise DeliveryStopped(_database_lost(exc, self.url, p.options.issue), summary) from None
        finally:
            if not pooled:
                for prov in providers.values():
                    prov.close()
        return summary

    def _run_pooled(self, plan: Plan, summary: Summary, pace: _Pace, size: int,
                    progress: Callable[[int], None] | None, in_flight: Callable[[], ContextManager[None]]) -> None:
        """run()'s loop over several connections (send_pool.py): the same steps, the batches side by side."""
        from newsletter_mailer.send_pool import deliver_pooled

        budget, issue = self.p.composed.settings.delivery.max_consecutive_failures, self.p.options.issue

        def next_batch(batches: Iterator[list[Recipient]]) -> list[Recipient] | None:
            for batch in batches:
                pace.wait()
                batch, left = self.audience.still_wanted(batch)
                summary.unsubscribed_during += left
                pace.done(len(batch))
                if progress and left:
                    progress(left)
                if batch:
                    return batch
            return None

        batches = (batch for _, batch in _chunks(self._recipients(plan), size))
        deliver_pooled(self.p.provider, self.ledger, self.slug, batches, summary,
                       next_batch=next_batch, progress=progress, in_flight=in_flight,
                       deliver_one=lambda ledger, provider, batch, part: deliver_batch(
                           ledger, self.slug, provider, batch, part),
                       check=lambda: _too_many_failures(summary, issue) if summary.in_a_row >= budget else None)

    def _provider(self, providers: dict[int, Provider], variant: Variant) -> Provider:
        """The variant's provider, made and opened on its first batch (the same kind and settings)."""
        c = self.editions.composed(variant)
        prov = providers.get(id(c))
        if prov is None:
            assert self.p.provider_for is not None
            self._store_links()  # an edition first composed now (the plan composes them): its links too
            prov = providers[id(c)] = self.p.provider_for(c)
            prov.open()
            if self._batch_id is not None:  # a scheduled send: every variant's requests join its batch
                prov.join_schedule(self._batch_id, self.p.when.unix)
        return prov

    def _store_links(self) -> None:
        """[tracking]: the links of the issue and of every edition composed so far, stored before a
        message carries them (a click redirects only to a stored URL); again only when there are more."""
        ids = self.p.link_ids
        if ids is not None and len(ids.links) > self._links_stored:
            clicks.store_links(self.audience.store.db, self.slug, ids.links)
            self._links_stored = len(ids.links)

    def _schedule(self) -> str:
        """One batch id for this scheduled send, in the ledger before any request carries it."""
        when = self.p.when
        batch_id = self.p.provider.schedule(when.unix)
        self.ledger.add_schedule(self.slug, batch_id, when.unix, when.iana)
        return batch_id

    def close(self) -> None:
        self.audience.close()
        if self.ledger is not None:
            self.ledger.close()
        if self._lock is not None:
            self._lock.release()


@dataclass
class Summary:
    """What a run did, counted batch by batch (DeliveryStopped carries it when a run stops)."""

    plan: Plan
    provider: str
    when: When | None = None    # scheduled: 'sent' counts those the provider holds until then
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    would_send: int = 0
    unsubscribed_during: int = 0  # suppressed in the store after the plan: left out, no ledger row
    failures: list[tuple[str, str]] = field(default_factory=list)
    uncertain_emails: list[str] = field(default_factory=list)
    in_a_row: int = 0           # failures since the last success: the send stops at the budget
    refused_in_a_row: int = 0   # of those, refused for good (5xx): resumed only with --retry-failed
    notes: list[str] = field(default_factory=list)  # said once with the summary (the relay took fewer connections)

    def add(self, part: Summary) -> None:
        """A batch's own counts (another connection's), as if counted here in turn."""
        self.sent += part.sent
        self.failed += part.failed
        self.uncertain += part.uncertain
        self.failures += part.failures
        self.uncertain_emails += part.uncertain_emails
        if part.sent:  # a success in the batch: only the failures after it are in a row
            self.in_a_row, self.refused_in_a_row = part.in_a_row, part.refused_in_a_row
        else:
            self.in_a_row += part.in_a_row
            self.refused_in_a_row += part.refused_in_a_row

    def count(self, outcomes: list[Outcome]) -> None:
        for r in outcomes:
            if r.ok:
                self.sent += 1
                self.in_a_row = self.refused_in_a_row = 0
            elif r.uncertain:
                self.uncertain += 1
                self.uncertain_emails.append(r.email)
            else:
                self.failed += 1
                self.failures.append((r.email, r.error or "failed"))
                self.in_a_row += 1
                self.refused_in_a_row += bool(r.permanent)


class DeliveryStopped(NewsletterError):
    """The send stopped part-way: the cause's message, and the summary of what went out before."""

    def __init__(self, cause: NewsletterError, summary: Summary):
        super().__init__(cause.message, path=cause.path, line=cause.line, field=cause.field,
                         hint=cause.hint, exit_code=cause.exit_code)
        self.summary = summary


def deliver_batch(ledger: Ledger, slug: str, provider: Provider, batch: list[Recipient],
                  summary: Summary, batch_id: str | None = None, variant: str | None = None) -> None:
    """One batch (of one variant): ledger 'sending' (committed) → provider.send → ledger result,
    counted in summary. With a batch_id (a scheduled send) the accepted ones are recorded 'scheduled'."""
    emails = [r.email for r in batch]
    ledger.begin(slug, emails, provider.name, [r.message_id for r in batch], batch_id, variant)
    try:
        outcomes = provider.send(batch)
    except NewsletterError as exc:
        # A provider raises only when the whole batch was refused (nothing delivered).
        ledger.finish(slug, [Outcome(e, False, error=exc.message) for e in emails])
        summary.failed += len(emails)
        raise
    except Crowded as exc:
        # That connection was refused as one too many, nothing sent: the pool sends them on another.
        ledger.finish(slug, [Outcome(e, False, error=f"not sent: {exc.error}") for e in emails])
        raise
    except BaseException:
        # Interrupted mid-attempt: delivery unknown, so these are held back next time.
        ledger.finish(slug, [Outcome(e, False, uncertain=True, error="the send was interrupted during this attempt")
                             for e in emails])
        summary.uncertain += len(emails)
        raise
    ledger.finish(slug, outcomes, scheduled=batch_id is not None)
    summary.count(outcomes)


def _too_many_failures(summary: Summary, issue: Path) -> NewsletterError:
    last = summary.failures[-1][1] if summary.failures else "failed"
    refused = summary.refused_in_a_row
    retry = f", adding --retry-failed to retry the {refused} refused for good" if refused else ""
    return NewsletterError(f"stopped after {summary.in_a_row} failures in a row (last: {last}); "
                           f"fix the cause, then resume with the same `newsletter send` command{retry}",
                           path=issue, exit_code=1)


def _database_lost(exc: BaseException, url: str | None, issue: Path) -> NewsletterError:
    """One line: the ledger cannot be written, so the send stops; those in flight are held back
    as uncertain by the next run, which is the same command."""
    cause = unreachable(url, exc).message if url is not None else f"the ledger failed: {exc}"
    return NewsletterError(f"the send stopped: {cause}; resume with the same `newsletter send` command "
                           "once the database is back (nobody is sent the issue twice)", path=issue, exit_code=1)


def _chunks(items: Iterator[tuple[Variant, Recipient]], size: int) -> Iterator[tuple[Variant, list[Recipient]]]:
    """Batches of one variant each (a provider's request shares one content); one pass over the
    list, with at most one batch a variant waiting."""
    waiting: dict[Variant, list[Recipient]] = {}
    for variant, item in items:
        batch = waiting.setdefault(variant, [])
        batch.append(item)
        if len(batch) >= size:
            yield variant, batch
            waiting[variant] = []
    for variant, batch in waiting.items():
        if batch:
            yield variant, batch


class _Pace:
    """delivery.rate messages a second, kept even: batches shrink to at most a second's worth."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self.started = time.monotonic()
        self.attempted = 0

    def batch_size(self, provider_size: int) -> int:
        return min(provider_size, max(1, int(self.rate))) if self.rate else provider_size

    def wait(self) -> None:
        if self.rate:
            wait = self.started + self.attempted / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def done(self, n: int) -> None:
        self.attempted += n


@dataclass
class IssueStatus:
    """What the ledger says about one issue (in-flight rows counted as uncertain)."""

    slug: str
    state: State
    counts: dict[str, int] = field(default_factory=dict)   # empty: no ledger yet
    rows: list[Row] = field(default_factory=list)
    per_request: list[type] = field(default_factory=list)  # providers whose uncertain unit is a request
    schedules: list[tuple[str, int, int, str | None]] = field(default_factory=list)  # Ledger.schedules
    zone: str | None = None     # the settings' timezone, for showing scheduled times
    readers: dict[str, int] = field(default_factory=dict)  # what readers did: unsubscribed, bounced, …
    variants: dict[str, dict[str, int]] = field(default_factory=dict)  # counts per variant (for: conditions)
    ab: list[tuple[str, int, int]] | None = None  # a subject test: ab_test.summary
    ab_verb: str = "clicked"  # what its readers are counted by ([tracking] ab_winner)


def ledger_of(options: Options) -> tuple[Settings, str, State]:
    """Settings, the issue's slug and the state its ledger is in (it may not exist yet)."""
    settings, settings_dir = load_settings(options.config, options.issue)
    if not options.issue.is_file():  # a mistyped name would otherwise read as "not sent yet"
        raise unreadable(options.issue, FileNotFoundError() if not options.issue.exists() else IsADirectoryError())
    return settings, slug_of(options.issue), state_for(options, settings, settings_dir)


def issue_status(options: Options) -> IssueStatus:
    settings, slug, state = ledger_of(options)
    ledger = state.ledger(create=False)
    if ledger is None:
        return IssueStatus(slug, state)
    try:
        counts, rows, schedules = ledger.counts(slug), list(ledger.rows(slug)), ledger.schedules(slug)
        variants = ledger.variants(slug)
        store = state.audience(create=False)
        try:
            ab = ab_test.summary(ledger.db, store.db if store is not None else None, slug,
                                 settings.tracking.ab_winner)
        finally:
            if store is not None:
                store.close()
    finally:
        ledger.close()
    names = sorted({r.provider for r in rows if r.provider and r.status in ("uncertain", "sending")})
    per_request = [cls for cls in map(provider_class, names) if cls.uncertainty == "request"]
    return IssueStatus(slug, state, counts, rows, per_request, schedules, settings.timezone,
                       _readers(state, slug), variants, ab, ab_test.VERB[settings.tracking.ab_winner])


def _readers(state: State, slug: str) -> dict[str, int]:
    """Unsubscribes, bounces and complaints attributed to the issue, from the audience store if
    there is one (never created just to be read)."""
    store = state.audience(create=False)
    if store is None:
        return {}
    try:
        return store.counts_for_issue(slug)
    finally:
        store.close()


def test_recipients(p: Prepared, to: list[str], as_email: str | None,
                    variant: str | None = None) -> tuple[list[Recipient], str, Provider]:
    """Recipients for test-send: each --to (or test_recipient), personalised as one subscriber, and
    the provider of the email they get: --variant's, else that subscriber's variant (for: on
    sections), else the whole issue."""
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
    name, fields, who_email, who_sub = "", {}, None, None
    editions = p.variants()
    if p.options.list_path is not None:
        subs = SubscriberList(p.options.list_path)
        check_columns(editions.audiences.located(), subs.columns, p.options.issue, p.options.list_path)
        wanted = as_email.lower() if as_email else None
        for sub in subs:
            if wanted is None or sub.email.lower() == wanted:
                name, fields, who_email, who_sub = sub.name, sub.fields, sub.email, sub
                break
        else:
            if wanted:
                raise NewsletterError(f"{as_email} is not a subscriber on the list", path=p.options.list_path,
                                      field="--as")
    elif as_email:
        who_email = as_email
    audiences = editions.audiences
    chosen = (audiences.find(variant, audiences.possible()) if variant is not None else
              audiences.of(who_sub) if who_sub is not None else None)
    composed = editions.composed(chosen) if chosen is not None else p.composed
    missing = composed.filler().missing(frozenset(fields))
    recipients = []
    for a in addrs:
        r = p.recipient(who_email or a, name, fields, link_for=a, composed=composed)
        r.email, r.name = a, ""  # addressed to the tester, personalised as the subscriber, the tester's link
        recipients.append(r)
    who = who_email or ("the defaults" if not missing else "the defaults (no value for " + ", ".join(missing) + ")")
    if chosen is not None and audiences.conditional:
        who += f", variant {chosen.name}"
    provider = p.provider if composed is p.composed or p.provider_for is None else p.provider_for(composed)
    return recipients, who, provider
