"""`newsletter compose`, `check` and `schema`: the issue, before anything is sent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.common import ConfigOpt, IssueArg, reporting, show


ReadersOpt = Annotated[Optional[Path], typer.Option("--list", metavar="CSV", help="subscribers CSV: each variant (for: on sections) checked against its readers, and counted")]


def _variants(c, list_path: Path | None, issue: Path, settings_dir: Path | None):
    """(editions, readers per variant or None, the variants to preview) of the composed issue."""
    from newsletter_mailer.conditions import check_columns
    from newsletter_mailer.subscribers import SubscriberList
    from newsletter_mailer.variants import Editions, ordered

    editions = Editions(c, settings_dir)
    audiences = editions.audiences
    if list_path is None:
        return editions, None, audiences.possible()
    subs = SubscriberList(list_path, allow_local_domains=c.settings.delivery.allow_local_domains)
    check_columns(audiences.located(), subs.columns, issue, list_path)
    readers = audiences.of_list(subs)
    return editions, readers, ordered(readers)


def _echo_checks(checks) -> None:
    marks = {"ok": "  ok  ", "warning": "  warn", "error": "  ERROR"}
    for c in checks:
        typer.echo(f"{marks[c.level]} {c.message}")


@app.command()
def compose(
    issue: IssueArg,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="output folder (default build/<slug>/)")] = None,
    open_: Annotated[bool, typer.Option("--open", help="open the preview in a browser")] = False,
    config: ConfigOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="serve the preview on 127.0.0.1 and rebuild it on every save")] = False,
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=0, max=65535, show_default=False, help="port of --watch (default 8000; 0 picks a free one)")] = 8000,
    list_: ReadersOpt = None,
) -> None:
    """Compose an issue: email.html, email.txt, web.html and preview.html, plus the checks."""
    if watch:
        from newsletter_mailer.watch import serve

        with reporting():
            serve(issue, config, out, port, open_, echo=typer.echo)
        return
    from newsletter_mailer.checks import failures, run_checks
    from newsletter_mailer.compose import compose as compose_issue
    from newsletter_mailer.output import write_build
    from newsletter_mailer.settings import load_settings

    with reporting():
        settings, settings_dir = load_settings(config, issue)
        c = compose_issue(issue, settings, settings_dir)
        editions, readers, shown = _variants(c, list_, issue, settings_dir)
        checks = run_checks(c, readers, list_.name if list_ else None)
        out_dir = out if out is not None else Path("build") / c.slug
        paths = write_build(c, checks, out_dir, settings_dir, editions, shown, readers)
    for name, path in paths.items():
        typer.echo(f"wrote {path}")
    if editions.audiences.conditional:
        for v in shown:
            typer.echo(f"variant {v.name}: " + (f"{readers[v]} reader(s)" if readers is not None else
                                               "sections " + (", ".join(str(i + 1) for i in v.sections) or "none")))
    _echo_checks(checks)
    if open_:
        import webbrowser

        webbrowser.open(paths["preview.html"].resolve().as_uri())
    if failures(checks):
        typer.echo(f"error: {issue}: {len(failures(checks))} check(s) failed (see above)", err=True)
        raise typer.Exit(1)


@app.command()
def check(issue: IssueArg, config: ConfigOpt = None, list_: ReadersOpt = None) -> None:
    """Validate and check an issue without writing anything; non-zero exit on errors."""
    from newsletter_mailer.checks import failures, run_checks
    from newsletter_mailer.compose import compose as compose_issue
    from newsletter_mailer.cli.common import settings_and_state

    from newsletter_mailer.sequences.model import is_sequence_file

    with reporting():
        settings, settings_dir, st = settings_and_state(config, None, issue=issue)
        st.list_ids(settings, record=False)  # a changed list id: refused
        if is_sequence_file(issue):  # sequences/<name>.yaml: the file and every step
            return _check_sequence(issue, settings, settings_dir)
        c = compose_issue(issue, settings, settings_dir)
        _, readers, _ = _variants(c, list_, issue, settings_dir)
        checks = run_checks(c, readers, list_.name if list_ else None)
    _echo_checks(checks)
    if failures(checks):
        typer.echo(f"error: {issue}: {len(failures(checks))} check(s) failed", err=True)
        raise typer.Exit(1)


def _check_sequence(path: Path, settings, settings_dir: Path) -> None:
    from newsletter_mailer.checks import failures
    from newsletter_mailer.sequences.check import check as check_sequence

    seq, steps = check_sequence(path, settings, settings_dir)
    failed = 0
    for step, checks in steps:
        typer.echo(f"{show(step)}:")
        _echo_checks(checks)
        failed += len(failures(checks))
    if failed:
        typer.echo(f"error: {path}: {failed} check(s) failed in its steps (see above)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: {len(seq.steps)} step(s), start: {seq.start}: ok")


@app.command()
def schema(
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE", help="write to a file instead of stdout")] = None,
    config: ConfigOpt = None,
    settings_: Annotated[bool, typer.Option("--settings", help="the format of newsletter.toml instead of the issue file's")] = False,
) -> None:
    """Print the issue file format as JSON Schema (for YAML editors' autocompletion); --settings:
    newsletter.toml's (for TOML editors: `init` points newsletter.toml at it with `#:schema`).

    The formats do not depend on the settings; --config is accepted (and checked) like
    every other command's, so scripts can pass it everywhere.
    """
    import json

    from newsletter_mailer.schema import json_schema
    from newsletter_mailer.settings import settings_json_schema

    with reporting():
        if config is not None:
            from newsletter_mailer.settings import load_settings

            load_settings(config)
        text = json.dumps(settings_json_schema() if settings_ else json_schema(), indent=2, ensure_ascii=False) + "\n"
        if out is None:
            sys.stdout.write(text)
            return
        _write_schema(out, text)
    typer.echo(f"wrote {out}")


def _write_schema(out: Path, text: str) -> None:
    """Through the one safe writer: a planted link at --out is replaced, never written through."""
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.files import write_file

    try:
        write_file(out, text.encode("utf-8"))
    except OSError as exc:
        raise NewsletterError(f"cannot write: {exc.strerror or exc}", path=out) from None
