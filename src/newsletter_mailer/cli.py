"""The `newsletter` command. Heavy libraries are imported inside the commands that use them.

Every NewsletterError becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="newsletter",
    help="Compose HTML email newsletters from YAML issues and send them to a list, exactly once each.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log retries and provider steps to stderr")] = False,
) -> None:
    if verbose:
        import logging

        from newsletter_mailer.errors import redact

        class _Redact(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                record.msg, record.args = redact(record.getMessage()), None
                return True

        handler = logging.StreamHandler()
        handler.addFilter(_Redact())
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("newsletter_mailer")
        root.addHandler(handler)
        root.setLevel(logging.INFO)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (default ./newsletter.toml)")]
IssueArg = Annotated[Path, typer.Argument(help="the issue file, e.g. issues/2020-09-cscp.yaml", show_default=False)]


def _fail(exc) -> None:
    from newsletter_mailer.errors import redact

    typer.echo(redact(f"error: {exc.format()}"), err=True)
    raise typer.Exit(exc.exit_code)


def _echo_checks(checks) -> None:
    marks = {"ok": "  ok  ", "warning": "  warn", "error": "  ERROR"}
    for c in checks:
        typer.echo(f"{marks[c.level]} {c.message}")


@app.command()
def compose(
    issue: IssueArg,
    out: Annotated[Optional[Path], typer.Option("--out", help="output folder (default build/<slug>/)")] = None,
    open_: Annotated[bool, typer.Option("--open", help="open the preview in a browser")] = False,
    config: ConfigOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="serve the preview on 127.0.0.1 and rebuild it on every save")] = False,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="port of --watch (0 picks a free one)")] = 8000,
) -> None:
    """Compose an issue: email.html, email.txt, web.html and preview.html, plus the checks."""
    if watch:
        from newsletter_mailer.errors import NewsletterError
        from newsletter_mailer.watch import serve

        try:
            serve(issue, config, out, port, open_, echo=typer.echo)
        except NewsletterError as exc:
            _fail(exc)
        return
    from newsletter_mailer.checks import failures, run_checks
    from newsletter_mailer.compose import compose as compose_issue
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.output import write_build
    from newsletter_mailer.settings import load_settings

    try:
        settings, settings_dir = load_settings(config)
        c = compose_issue(issue, settings, settings_dir)
        checks = run_checks(c)
        out_dir = out if out is not None else Path("build") / c.slug
        paths = write_build(c, checks, out_dir, settings_dir)
    except NewsletterError as exc:
        _fail(exc)
    for name, path in paths.items():
        typer.echo(f"wrote {path}")
    _echo_checks(checks)
    if open_:
        import webbrowser

        webbrowser.open(paths["preview.html"].resolve().as_uri())
    if failures(checks):
        typer.echo(f"error: {issue}: {len(failures(checks))} check(s) failed (see above)", err=True)
        raise typer.Exit(1)


@app.command()
def check(issue: IssueArg, config: ConfigOpt = None) -> None:
    """Validate and check an issue without writing anything; non-zero exit on errors."""
    from newsletter_mailer.checks import failures, run_checks
    from newsletter_mailer.compose import compose as compose_issue
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.settings import load_settings

    try:
        settings, settings_dir = load_settings(config)
        checks = run_checks(compose_issue(issue, settings, settings_dir))
    except NewsletterError as exc:
        _fail(exc)
    _echo_checks(checks)
    if failures(checks):
        typer.echo(f"error: {issue}: {len(failures(checks))} check(s) failed", err=True)
        raise typer.Exit(1)


@app.command()
def schema(
    out: Annotated[Optional[Path], typer.Option("--out", help="write to a file instead of stdout")] = None,
) -> None:
    """Print the issue file format as JSON Schema (for YAML editors' autocompletion)."""
    import json

    from newsletter_mailer.schema import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


ListOpt = Annotated[Optional[Path], typer.Option("--list", help="subscribers CSV")]
ProviderOpt = Annotated[Optional[str], typer.Option("--provider", help="outbox | smtp | sendgrid (default: delivery.provider)")]
OutboxOpt = Annotated[Optional[Path], typer.Option("--outbox", help="outbox folder (default ./outbox)")]
StateOpt = Annotated[Optional[Path], typer.Option("--state", help="state folder with the send ledger (default .newsletter/ next to newsletter.toml)")]


def _confirm(question: str, yes: bool) -> None:
    from newsletter_mailer.errors import NewsletterError

    if yes:
        return
    if not sys.stdin.isatty():
        raise NewsletterError("no terminal to confirm the send: pass --yes to send without asking")
    if not typer.confirm(question, default=False):
        typer.echo("nothing sent")
        raise typer.Exit(1)


def _progress(total: int):
    """A rich progress bar on a terminal; nothing in logs and pipes."""
    import contextlib

    if not sys.stderr.isatty() or total <= 0:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def _lines(emails: list[str], limit: int = 20) -> str:
    shown = ", ".join(emails[:limit])
    return shown + (f" … and {len(emails) - limit} more" if len(emails) > limit else "")


@app.command()
def send(
    issue: IssueArg,
    list_: ListOpt = None,
    provider: ProviderOpt = None,
    outbox: OutboxOpt = None,
    state: StateOpt = None,
    config: ConfigOpt = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="only subscribers with this tag")] = None,
    suppress: Annotated[Optional[list[Path]], typer.Option("--suppress", help="file of addresses to leave out (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="do everything but deliver")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="send without asking")] = False,
    resend_uncertain: Annotated[bool, typer.Option("--resend-uncertain", help="also send to those whose earlier attempt may or may not have arrived")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="also retry permanent failures")] = False,
) -> None:
    """Send an issue to the list: each subscriber exactly once, recorded in the ledger."""
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.send import Options, Sender, prepare

    opts = Options(issue=issue, list_path=list_, provider=provider, outbox=outbox, state=state, config=config,
                   tag=tag, suppress=list(suppress or []), dry_run=dry_run,
                   resend_uncertain=resend_uncertain, retry_failed=retry_failed)
    sender = None
    try:
        prepared = prepare(opts)
        sender = Sender(prepared)
        plan = sender.plan()
        for note in prepared.notes:
            typer.echo(f"note: {note}")
        c = prepared.composed
        typer.echo(f"issue:     {c.slug} — {c.subject.fill(c.filler().defaults())}")
        typer.echo(f"provider:  {prepared.provider.name}")
        typer.echo(f"recipients: {plan.to_send} to send" + (f", {plan.already_sent} already sent" if plan.already_sent else ""))
        if plan.interrupted:
            typer.echo(f"interrupted last time, delivery unknown: {_lines(plan.interrupted)}")
        _echo_plan_skips(plan)
        if plan.to_send == 0:
            if plan.failed_before or plan.held_back:  # not "everyone has had it": say who has not
                typer.echo(f"nothing to send: {plan.already_sent} already sent"
                           + (f", {len(plan.failed_before)} failed permanently before (--retry-failed)"
                              if plan.failed_before else "")
                           + (f", {len(plan.held_back)} held back (--resend-uncertain)" if plan.held_back else ""))
            else:
                typer.echo("nothing to send: every subscriber on the list has had this issue" if plan.already_sent
                           else "nothing to send: no subscriber on the list can receive this issue")
            _echo_held(plan.held_back, issue)
            return
        if dry_run:
            typer.echo(f"dry run: would send {plan.to_send} message(s) via {prepared.provider.name}; nothing sent")
            return
        _confirm(f"Send to {plan.to_send} recipient(s) via {prepared.provider.name}?", yes)
        with _progress(plan.to_send) as bar:
            task = bar.add_task("send", total=plan.to_send) if bar else None
            summary = sender.run((lambda n: bar.advance(task, n)) if bar else None)
    except NewsletterError as exc:
        stopped = getattr(exc, "summary", None)
        if stopped is not None:  # the send stopped part-way: say what went out before it did
            _echo_summary(stopped, issue)
        _fail(exc)
    finally:
        if sender is not None:
            sender.close()
    _echo_summary(summary, issue)
    _echo_held(plan.held_back, issue)
    if summary.failed:
        raise typer.Exit(1)


def _echo_summary(summary, issue: Path) -> None:
    typer.echo(f"sent: {summary.sent}, failed: {summary.failed}, uncertain: {summary.uncertain}")
    for email, why in summary.failures[:20]:
        typer.echo(f"  failed {email}: {why}")
    if len(summary.failures) > 20:
        typer.echo(f"  … and {len(summary.failures) - 20} more (newsletter status {issue} --list-failed)")
    if summary.uncertain_emails:
        typer.echo(f"uncertain (may or may not have arrived): {_lines(summary.uncertain_emails)}")


def _echo_plan_skips(plan) -> None:
    lines = plan.skips.summary_lines() if plan.skips is not None else []
    if plan.header_invalid:
        lines.append(f"invalid header value: {len(plan.header_invalid)} (line "
                     + ", ".join(str(l) for l, _, _ in plan.header_invalid[:20]) + ")")
    if plan.failed_before:
        lines.append(f"failed permanently before: {len(plan.failed_before)} (retry with --retry-failed)")
    if lines:
        typer.echo("skipped:")
        for line in lines:
            typer.echo(f"  {line}")


def _echo_held(held: list[str], issue: Path) -> None:
    if held:
        typer.echo(f"held back: {len(held)} whose earlier attempt may or may not have arrived: {_lines(held)}")
        typer.echo(f"  to send to them anyway: newsletter send {issue} --resend-uncertain …")


@app.command("test-send")
def test_send(
    issue: IssueArg,
    to: Annotated[Optional[list[str]], typer.Option("--to", help="address to send to (repeatable; default test_recipient)")] = None,
    list_: ListOpt = None,
    as_: Annotated[Optional[str], typer.Option("--as", help="personalise as this subscriber of --list")] = None,
    provider: ProviderOpt = None,
    outbox: OutboxOpt = None,
    state: StateOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send the issue to yourself, subject prefixed [TEST]; not recorded in the ledger."""
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.send import Options, TEST_PREFIX, prepare, test_recipients

    opts = Options(issue=issue, list_path=list_, provider=provider, outbox=outbox, state=state, config=config)
    try:
        prepared = prepare(opts, subject_prefix=TEST_PREFIX)
        recipients, who = test_recipients(prepared, to or [], as_)
        p = prepared.provider
        p.open()
        try:
            results = p.send(recipients)
        finally:
            p.close()
    except NewsletterError as exc:
        _fail(exc)
    for note in prepared.notes:
        typer.echo(f"note: {note}")
    bad = [r for r in results if not r.ok]
    for r in results:
        typer.echo(f"{'sent' if r.ok else 'FAILED'} [TEST] to {r.email} via {p.name}, personalised as {who}"
                   + (f": {r.error}" if r.error else ""))
    if bad:
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
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.ledger import Ledger
    from newsletter_mailer.schema import slug_of
    from newsletter_mailer.send import Options, state_dir_for
    from newsletter_mailer.settings import load_settings

    try:
        slug = slug_of(issue)
        settings, settings_dir = load_settings(config)
        state_dir = state_dir_for(Options(issue=issue, state=state), settings_dir)
        path = state_dir / "ledger.sqlite3"
        if not path.exists():
            typer.echo(f"{slug}: not sent yet (no ledger at {path})")
            return
        ledger = Ledger(path)
    except NewsletterError as exc:
        _fail(exc)
    counts = ledger.counts(slug)
    in_flight = counts.pop("sending")
    counts["uncertain"] += in_flight
    typer.echo(f"{slug}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    rows = list(ledger.rows(slug))
    providers = sorted({r.provider for r in rows if r.provider})
    if counts["uncertain"]:
        per_request = "sendgrid" in providers
        typer.echo("uncertain: the attempt was interrupted, so delivery is unknown"
                   + (" (SendGrid: per request of up to 1000 recipients)" if per_request else " (per message)")
                   + f"; resend with: newsletter send {issue} --list … --resend-uncertain")
    if list_failed:
        for r in rows:
            if r.status == "failed":
                typer.echo(f"failed\t{r.email}\t{'permanent' if r.permanent else 'temporary'}\t{r.reason or ''}")
    if list_uncertain:
        for r in rows:
            if r.status in ("uncertain", "sending"):
                typer.echo(f"uncertain\t{r.email}\t{r.provider or ''}\t{r.updated_at}")
    ledger.close()


from newsletter_mailer.cli_site import register as _register_site
_register_site(app)


def main() -> None:
    import os

    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted: anything in flight is recorded as uncertain; run the same command to resume",
                   err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("NEWSLETTER_DEBUG"):
            raise
        from newsletter_mailer.errors import one_line, redact

        typer.echo(redact(one_line(f"error: internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                                   "rerun with NEWSLETTER_DEBUG=1 for details and report it")), err=True)
        sys.exit(70)
