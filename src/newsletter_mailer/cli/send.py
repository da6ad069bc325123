"""`newsletter send`, `test-send`, `status` and `cancel`: delivery, and what the ledger says about it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import (ConfigOpt, IssueArg, ListOpt, OutboxOpt, ProviderOpt, StateOpt,
                                          confirm, listing, reporting, show)


@app.command()
def send(
    issue: IssueArg,
    list_: ListOpt = None,
    provider: ProviderOpt = None,
    outbox: OutboxOpt = None,
    state: StateOpt = None,
    config: ConfigOpt = None,
    tag: Annotated[Optional[str], typer.Option("--tag", metavar="TAG", help="only subscribers with this tag")] = None,
    suppress: Annotated[Optional[list[Path]], typer.Option("--suppress", metavar="FILE", help="file of addresses to leave out (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="do everything but deliver")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="send without asking")] = False,
    resend_uncertain: Annotated[bool, typer.Option("--resend-uncertain", help="also send to those whose earlier attempt may or may not have arrived")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="also retry permanent failures")] = False,
    no_sync: Annotated[bool, typer.Option("--no-sync", help="SendGrid: do not pull its suppressions first")] = False,
    at: Annotated[Optional[str], typer.Option("--at", metavar="TIME", help='SendGrid: deliver at this time, e.g. "2026-12-07 09:00" (at most 72 hours ahead)')] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="the zone of --at, e.g. Europe/London (default the settings' timezone, else this machine's)")] = None,
    resend_cancelled: Annotated[bool, typer.Option("--resend-cancelled", help="also send to those whose scheduled send was cancelled")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="an invalid row in --list is an error and nothing is sent (default: skipped and listed)")] = False,
    ab_subject: Annotated[Optional[str], typer.Option("--ab-subject", metavar="SUBJECT", help="subject test: this subject to half of a --sample, the issue's to the other half; then --finish-ab")] = None,
    sample: Annotated[Optional[str], typer.Option("--sample", metavar="SHARE", help="subject test: the share of the list to test on, e.g. 20%")] = None,
    wait: Annotated[Optional[str], typer.Option("--wait", metavar="TIME", help="subject test: the same command after this long (e.g. 4h) finishes it")] = None,
    finish_ab: Annotated[bool, typer.Option("--finish-ab", help="subject test: pick the winner by clicks and send it to everyone else")] = False,
) -> None:
    """Send an issue to the list: each subscriber exactly once, recorded in the ledger."""
    from newsletter_mailer.cli.progress import progress
    from newsletter_mailer.send import DeliveryStopped, Options, Sender
    from newsletter_mailer.stopping import Interrupted, StopOnSignals

    opts = Options(issue=issue, list_path=list_, provider=provider, outbox=outbox, state=state, config=config,
                   tag=tag, suppress=list(suppress or []), dry_run=dry_run,
                   resend_uncertain=resend_uncertain, retry_failed=retry_failed, sync=not no_sync,
                   at=at, tz=tz, resend_cancelled=resend_cancelled, strict=strict)
    sender = summary = None
    with reporting():
        try:
            opts.ab = _subject_test(ab_subject, sample, wait, finish_ab)
            prepared = _prepare(opts)
            sender = Sender(prepared)
            plan = sender.plan()
            _echo_plan(prepared, plan)
            _echo_warnings(prepared.warnings, issue)
            if _stops_before_sending(prepared, plan, issue, dry_run):
                return
            verb = "Schedule" if prepared.when else "Send"
            confirm(f"{verb} {plan.to_send} recipient(s) via {prepared.provider.name}"
                    + (f" for {prepared.when.describe()}?" if prepared.when else "?"), yes, "send", "nothing sent")
            with progress("sending", plan.to_send, "messages") as advance, StopOnSignals() as stop:
                summary = sender.run(plan, advance, stop.in_flight)
        except DeliveryStopped as exc:  # stopped part-way: say what went out before it did
            _echo_summary(exc.summary, issue, _written_to(prepared))
            raise
        except Interrupted as exc:  # Ctrl-C or SIGTERM: one line, the exit code a shell expects
            typer.echo(_interrupted(exc, sender.summary, plan.to_send, opts), err=True)
            raise typer.Exit(exc.exit_code) from None
        finally:
            if sender is not None:
                sender.close()
    _echo_summary(summary, issue, _written_to(prepared))
    _echo_held(plan.held_back, issue)
    if summary.failed:
        raise typer.Exit(1)


def _stops_before_sending(prepared, plan, issue: Path, dry_run: bool) -> bool:
    """Nothing to send, or a dry run: said in one line, and True (the command ends, exit 0)."""
    if plan.to_send == 0:
        if plan.ab_later:  # the sample has had it: the rest wait for the subject test's finish
            typer.echo("nothing to send until the subject test is finished")
        else:
            _echo_nothing_to_send(plan, issue)
        return True
    if dry_run:
        verb = "schedule" if prepared.when else "send"
        typer.echo(f"dry run: would {verb} {plan.to_send} message(s) via {prepared.provider.name}; nothing sent")
        return True
    return False


def _subject_test(subject: str | None, sample: str | None, wait: str | None, finish: bool):
    """The subject test's options read, or None; one line naming the option that is wrong or missing."""
    from newsletter_mailer import ab_test
    from newsletter_mailer.errors import NewsletterError

    if subject is None and sample is None and wait is None:
        return ab_test.Request(finish=True) if finish else None
    if subject is None or sample is None:
        missing = "--sample" if subject is not None else "--ab-subject"
        raise NewsletterError(f"a subject test needs {missing} too", field=missing,
                              hint='e.g. --ab-subject "Other subject" --sample 20%')
    return ab_test.Request(subject.strip(), ab_test.parse_share(sample),
                           ab_test.parse_wait(wait) if wait is not None else None, finish)


def _interrupted(exc, summary, total: int, opts) -> str:
    """What went out, that the ledger has the rest, and the command that resumes (as typed here)."""
    import shlex

    from newsletter_mailer.send import same_send

    args = same_send(opts)
    if opts.at is not None:  # a scheduled send resumes for the same time
        args[-1:-1] = ["--at", opts.at] + (["--tz", opts.tz] if opts.tz else [])
    sent = summary.sent if summary else 0
    uncertain = summary.uncertain if summary else 0
    return (f"interrupted ({exc.name}): {sent} of {total} sent, {uncertain} uncertain (anything in flight is "
            f"recorded as uncertain: newsletter status {shlex.quote(str(opts.issue))} --list-uncertain); "
            f"resume with: {shlex.join(['newsletter', *args])}")


def _prepare(opts):
    """prepare(), printing the cron and systemd lines when the provider cannot hold mail (--at)."""
    from newsletter_mailer.schedule import CannotHold
    from newsletter_mailer.send import prepare

    try:
        return prepare(opts)
    except CannotHold as exc:
        for line in exc.lines:
            typer.echo(line)
        raise


def _echo_plan(prepared, plan) -> None:
    for note in prepared.notes:
        typer.echo(f"note: {note}")
    if prepared.options.list_path is None:  # not a quiet default: a forgotten --list looks like this
        typer.echo("note: no --list given: only the audience store's confirmed sign-ups are planned")
    c = prepared.composed
    subject = prepared.ab_subject or c.subject  # a subject test: the issue's own (A)
    typer.echo(f"issue:     {c.slug} — {subject.fill(c.filler().defaults())}")
    typer.echo(f"provider:  {prepared.provider.name}")
    if prepared.when:
        typer.echo(f"scheduled: {prepared.when.describe()} ({prepared.provider.label} holds the messages until then)")
    signups = (f" ({plan.signups} of these {'is a confirmed sign-up' if plan.signups == 1 else 'are confirmed sign-ups'}"
               " from the audience store)") if plan.signups else ""
    typer.echo(f"recipients: {plan.to_send} to send{signups}"
               + (f", {plan.already_sent} already sent" if plan.already_sent else ""))
    if prepared.editions is not None and prepared.editions.audiences.conditional:
        for name, n in plan.variants.items():
            typer.echo(f"  variant {name}: {n}")
    if plan.interrupted:
        typer.echo(f"interrupted last time, delivery unknown: {listing(plan.interrupted)}")
    for line in plan.ab_lines:
        typer.echo(line)
    lines = (plan.skips.summary_lines() if plan.skips is not None else []) + plan.unsafe_links.summary_lines()
    if plan.header_invalid:
        lines.append(f"invalid header value: {len(plan.header_invalid)} (line "
                     + ", ".join(str(l) for l, _, _ in plan.header_invalid[:20]) + ")")
    if plan.failed_before:
        lines.append(f"failed permanently before: {len(plan.failed_before)} (retry with --retry-failed)")
    if lines:
        typer.echo("skipped:")
        for line in lines:
            typer.echo(f"  {line}")


def _echo_warnings(warnings: list[str], issue: Path) -> None:
    """The checks' warnings before the question: a send is the last chance to see them."""
    for w in warnings:
        typer.echo(f"warning: {w}")
    if warnings:
        typer.echo(f"  (newsletter check {issue} shows every check)")


def _written_to(prepared) -> str:
    """Where the outbox put the messages, as the summary says it; other providers deliver."""
    return f"; written to {show(prepared.provider.folder)}/" if prepared.provider.name == "outbox" else ""


def _echo_nothing_to_send(plan, issue: Path) -> None:
    if plan.failed_before or plan.held_back:  # not "everyone has had it": say who has not
        typer.echo(f"nothing to send: {plan.already_sent} already sent"
                   + (f", {len(plan.failed_before)} failed permanently before (--retry-failed)"
                      if plan.failed_before else "")
                   + (f", {len(plan.held_back)} held back (--resend-uncertain)" if plan.held_back else ""))
    else:
        typer.echo("nothing to send: every subscriber on the list has had this issue" if plan.already_sent
                   else "nothing to send: no subscriber on the list can receive this issue")
    _echo_held(plan.held_back, issue)


def _echo_summary(summary, issue: Path, where: str = "") -> None:
    handed = f"scheduled: {summary.sent} for {summary.when.describe()}" if summary.when else f"sent: {summary.sent}"
    typer.echo(f"{handed}, failed: {summary.failed}, uncertain: {summary.uncertain}" + (where if summary.sent else ""))
    if summary.when and summary.sent:
        typer.echo(f"  to stop them before then: newsletter cancel {issue}")
    if summary.unsubscribed_during:
        typer.echo(f"unsubscribed during the send: {summary.unsubscribed_during} (left out, not attempted)")
    for email, why in summary.failures[:20]:
        typer.echo(f"  failed {email}: {why}")
    if len(summary.failures) > 20:
        typer.echo(f"  … and {len(summary.failures) - 20} more (newsletter status {issue} --list-failed)")
    if summary.uncertain_emails:
        typer.echo(f"uncertain (may or may not have arrived): {listing(summary.uncertain_emails)}")
    for note in summary.notes:
        typer.echo(note)


def _echo_held(held: list[str], issue: Path) -> None:
    if held:
        typer.echo(f"held back: {len(held)} whose earlier attempt may or may not have arrived: {listing(held)}")
        typer.echo(f"  to send to them anyway: newsletter send {issue} --resend-uncertain …")


@app.command("test-send")
def test_send(
    issue: IssueArg,
    to: Annotated[Optional[list[str]], typer.Option("--to", metavar="ADDR", help="address to send to; its unsubscribe link is its own (repeatable; default test_recipient)")] = None,
    list_: Annotated[Optional[Path], typer.Option("--list", metavar="CSV", help="subscribers CSV to personalise from (optional: its first subscriber, or --as; default the merge fields' defaults)")] = None,
    as_: Annotated[Optional[str], typer.Option("--as", metavar="ADDR", help="personalise as this subscriber of --list (and send the variant they get)")] = None,
    variant: Annotated[Optional[str], typer.Option("--variant", metavar="NAME", help="the variant to send (for: on sections), by the name compose shows")] = None,
    provider: ProviderOpt = None,
    outbox: OutboxOpt = None,
    state: StateOpt = None,
    config: ConfigOpt = None,
    sandbox: Annotated[bool, typer.Option("--sandbox", help="SendGrid: validate the whole request, deliver nothing")] = False,
) -> None:
    """Send the issue to yourself, subject prefixed [TEST]; not recorded in the ledger.

    The outbox writes it to outbox/<slug>/test/, a new file each time, apart from the real messages."""
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.send import TEST_PREFIX, Options, prepare, test_recipients

    opts = Options(issue=issue, list_path=list_, provider=provider, outbox=outbox, state=state, config=config)
    with reporting():
        prepared = prepare(opts, subject_prefix=TEST_PREFIX)
        recipients, who, p = test_recipients(prepared, to or [], as_, variant)
        if sandbox:
            if p.name != "sendgrid":
                raise NewsletterError(f"--sandbox is SendGrid's sandbox mode: {p.label} has none", field="--sandbox",
                                      hint="use --provider sendgrid, or leave --sandbox out")
            p.use_sandbox()
        p.open()
        try:
            outcomes = p.send(recipients)
        finally:
            p.close()
    for note in prepared.notes:
        typer.echo(f"note: {note}")
    done = "validated by SendGrid (sandbox: nothing delivered)" if sandbox else "sent"
    for r in outcomes:
        typer.echo(f"{done if r.ok else 'FAILED'} [TEST] to {r.email} via {p.name}, personalised as {who}"
                   + (f": {r.error}" if r.error else "") + (f" (written to {show(Path(r.where))})" if r.where else ""))
    if not all(r.ok for r in outcomes):
        raise typer.Exit(1)


@app.command()
def status(
    issue: IssueArg,
    config: ConfigOpt = None,
    state: StateOpt = None,
    list_failed: Annotated[bool, typer.Option("--list-failed", help="list failed addresses and why")] = False,
    list_uncertain: Annotated[bool, typer.Option("--list-uncertain", help="list addresses whose delivery is unknown")] = False,
) -> None:
    """What the ledger says about an issue: sent, failed, uncertain."""
    from newsletter_mailer.send import Options, issue_status

    with reporting():
        st = issue_status(Options(issue=issue, state=state, config=config))
    if not st.counts:
        typer.echo(f"{st.slug}: not sent yet (no ledger in {st.state.describe()})")
        return
    typer.echo(f"{st.slug}: " + ", ".join(f"{k} {v}" for k, v in st.counts.items()
                                          if v or k not in ("scheduled", "cancelled")))
    for name, counts in st.variants.items():
        typer.echo(f"  variant {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    if st.readers:
        r = st.readers
        typer.echo(f"readers: unsubscribed {r['unsubscribed']}, bounced {r['bounced']} "
                   f"(+{r['soft_bounces']} soft), complained {r['complained']}")
    _echo_schedules(st)
    for label, sent, clicked in st.ab or ():  # a subject test: both variants, then the choice
        if label == "winner":
            typer.echo("subject test: no winner yet (newsletter send … --finish-ab)")
        elif label.startswith("winner"):
            typer.echo(f"subject test: {label}")
        else:
            typer.echo(f"subject test: {label}: sent {sent}, {st.ab_verb} {clicked}")
    if st.counts["uncertain"]:
        unit = "".join(f" ({p.label}: per request of up to {p.batch_size} recipients)" for p in st.per_request)
        typer.echo("uncertain: the attempt was interrupted, so delivery is unknown" + (unit or " (per message)")
                   + f"; resend with: newsletter send {issue} --list … --resend-uncertain")
    for r in st.rows if list_failed else ():
        if r.status == "failed":
            typer.echo(f"failed\t{r.email}\t{'permanent' if r.permanent else 'temporary'}\t{r.reason or ''}")
    for r in st.rows if list_uncertain else ():
        if r.status in ("uncertain", "sending"):
            typer.echo(f"uncertain\t{r.email}\t{r.provider or ''}\t{r.updated_at}\t{r.message_id or ''}")


def _echo_schedules(st) -> None:
    """Each scheduled batch still held: its count and time (a passed time means SendGrid sent it)."""
    import time

    from newsletter_mailer.schedule import shown

    for _, send_at, count, zone in st.schedules:
        if count:
            passed = "; its time has passed: SendGrid has sent them" if send_at <= time.time() else ""
            typer.echo(f"scheduled: {count} for {shown(send_at, zone or st.zone)}{passed}")


@app.command()
def cancel(issue: IssueArg, config: ConfigOpt = None, state: StateOpt = None) -> None:
    """Cancel a scheduled send (send --at) that SendGrid still holds; the ledger marks them cancelled."""
    from newsletter_mailer.cancel import cancel_scheduled
    from newsletter_mailer.schedule import shown
    from newsletter_mailer.send import Options

    with reporting():
        report = cancel_scheduled(Options(issue=issue, state=state, config=config))
    if not report.cancelled and not report.went:
        typer.echo(f"{report.slug}: nothing scheduled to cancel")
        return
    for send_at, count, zone in report.cancelled:
        typer.echo(f"cancelled: {count} recipient(s) scheduled for {shown(send_at, zone)}")
    for send_at, count, zone in report.went:
        typer.echo(f"already went: {count} recipient(s) at {shown(send_at, zone)}: "
                   "SendGrid delivered them; they stay recorded as scheduled")
    if report.cancelled:
        typer.echo(f"to send to them after all: newsletter send {issue} … --resend-cancelled")
    if report.went:
        raise typer.Exit(1)
