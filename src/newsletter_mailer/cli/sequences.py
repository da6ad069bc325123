"""`newsletter sequences run|status|start`: welcome emails and the steps after them (sequences/)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, OutboxOpt, ProviderOpt, StateOpt, fail, reporting

sequences_app = typer.Typer(help="Welcome emails and sequences: run the due steps, see where readers are.",
                            no_args_is_help=True)
app.add_typer(sequences_app, name="sequences")
NamesArg = Annotated[Optional[list[str]], typer.Argument(metavar="NAME", help="sequence names (default every file in sequences/)", show_default=False)]


@sequences_app.command("run")
def run(
    names: NamesArg = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what is due, send nothing, change nothing")] = False,
    resend_uncertain: Annotated[bool, typer.Option("--resend-uncertain", help="send again the steps whose delivery is unknown (a run was killed mid-attempt); check the server's log first")] = False,
    provider: ProviderOpt = None,
    outbox: OutboxOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Send every due step not yet sent, to every reader in a sequence, and exit (cron: every minute)."""
    import os

    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.sequences.run import Runner

    with reporting():
        settings, settings_dir, st = settings_and_state(config, state)
        report = Runner(settings, settings_dir, st, os.environ, provider, outbox, dry_run,
                        resend_uncertain).run(names or None)
    for step in report.steps:
        if dry_run:
            typer.echo(f"{step.sequence} / {step.step}: would send {step.would_send}"
                       + (f", {step.held} held back (uncertain or refused before)" if step.held else ""))
            continue
        parts = [f"{step.sent} sent"] + [f"{n} {what}" for n, what in (
            (step.failed, "failed"), (step.uncertain, "uncertain"), (step.held, "held back (uncertain or refused "
                                                                                "before: `newsletter sequences status`)"),
            (step.moved_on, "already sent (moved on)"), (step.left, "left just now")) if n]
        typer.echo(f"{step.sequence} / {step.step}: " + ", ".join(parts))
    for line in report.busy:
        typer.echo(f"skipped: {line}")
    if not report.steps and not report.errors:
        typer.echo("nothing due")
    for exc in report.errors[:-1]:
        from newsletter_mailer.errors import redact

        typer.echo(redact(f"error: {exc.format()}"), err=True)
    if report.errors:
        fail(report.errors[-1])


@sequences_app.command("status")
def status(
    names: NamesArg = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Per step: readers due now, sent, failed, uncertain, waiting, and who left the sequence."""
    import time

    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.sequences import model
    from newsletter_mailer.sequences.status import COLUMNS, step_counts

    with reporting():
        settings, settings_dir, st = settings_and_state(config, state)
        seqs = [model.find(n, settings_dir) for n in names] if names else model.load_all(settings_dir)
        rows = [(seq, step_counts(st, seq, int(time.time()))) for seq in seqs]
    if not rows:
        typer.echo("no sequences (add one in sequences/, see `newsletter init`)")
    for seq, counts in rows:
        typer.echo(f"{seq.name} (start: {seq.start}, min_gap {seq.min_gap // 3600}h)")
        typer.echo("  " + f"{'step':<30}" + "".join(f"{c:>10}" for c in COLUMNS))
        for slug, c in counts.items():
            typer.echo("  " + f"{slug:<30}" + "".join(f"{c[k]:>10}" for k in COLUMNS))


@sequences_app.command("start")
def start(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the sequence", show_default=False)],
    addresses: Annotated[list[str], typer.Argument(metavar="ADDR", help="readers to start in it", show_default=False)],
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Start readers in a sequence by hand (any start:); one already in it keeps their place."""
    import time

    from newsletter_mailer.cli.common import settings_and_state
    from newsletter_mailer.sequences import members, model
    from newsletter_mailer import addresses as addr
    from newsletter_mailer.errors import NewsletterError

    with reporting():
        settings, settings_dir, st = settings_and_state(config, state)
        seq = model.find(name, settings_dir)
        emails = []
        for a in addresses:
            try:
                emails.append(addr.normalise(a, settings.delivery.allow_local_domains))
            except ValueError as exc:
                raise NewsletterError(f"{a!r}: {exc}", field="ADDR") from None
        store = st.audience()
        try:
            with store.transaction():
                n = members.enrol(store, seq.name, emails, int(time.time()))
        finally:
            store.close()
    typer.echo(f"{n} reader(s) started in {seq.name}; {len(emails) - n} already in it")
