"""`newsletter audience list|suppress|unsuppress|erase|export|import`: the store of what readers told us."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from newsletter_mailer.cli import app
from newsletter_mailer.cli.audience_sync import register as register_sync
from newsletter_mailer.cli.common import ConfigOpt, StateOpt, reporting, show

audience_app = typer.Typer(help="What readers told us: list, suppress, unsuppress, erase, export and import addresses.",
                           no_args_is_help=True)
app.add_typer(audience_app, name="audience")

AddrArgs = Annotated[list[str], typer.Argument(metavar="ADDR", help="email addresses", show_default=False)]
COLUMNS = ("email", "status", "source", "issue", "reason", "name", "updated_at")


@contextmanager
def _store(config: Optional[Path], state: Optional[Path]) -> Iterator:
    """The audience store of --state (default .newsletter/ next to newsletter.toml), closed after."""
    with _store_and_erased(config, state) as (store, _):
        yield store


@contextmanager
def _store_and_erased(config: Optional[Path], state: Optional[Path]) -> Iterator:
    """(store, its tombstones): `email in erased` for the addresses `audience erase` removed."""
    from newsletter_mailer.audience.erasure import Erased
    from newsletter_mailer.cli.common import settings_and_state

    handle = settings_and_state(config, state, settings_optional=True)[2]
    store = handle.audience()
    try:
        yield store, Erased(store)
    finally:
        store.close()


def _checked(emails: list[str]) -> list[str]:
    """Every argument a valid address, or one line naming the first that is not (exit 2)."""
    from newsletter_mailer import addresses
    from newsletter_mailer.errors import NewsletterError

    out = []
    for raw in emails:
        try:
            out.append(addresses.check(raw.strip()))
        except ValueError as exc:
            raise NewsletterError(f"'{raw}' is not a valid email address: {exc}", field="ADDR") from None
    return out


@audience_app.command("list")
def list_(
    status: Annotated[Optional[str], typer.Option("--status", metavar="STATUS", help="only this status: pending, subscribed, "
                                                  "unsubscribed, bounced, complained")] = None,
    format_: Annotated[str, typer.Option("--format", metavar="FORMAT", show_default=False, help="lines (one address a line; the default) or csv (all columns)")] = "lines",
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """The addresses in the store, one a line with its status (bare with --status; or every column as CSV)."""
    from newsletter_mailer.audience import clicks
    from newsletter_mailer.audience.store import STATUSES
    from newsletter_mailer.csvcells import write_rows
    from newsletter_mailer.errors import NewsletterError, one_line
    from newsletter_mailer.sequences.members import positions as sequence_positions

    with reporting():
        if status is not None and status not in STATUSES:
            raise NewsletterError(f"unknown status '{status}'", field="--status", hint="use " + ", ".join(STATUSES))
        if format_ not in ("lines", "csv"):
            raise NewsletterError(f"unknown format '{format_}'", field="--format", hint="use lines or csv")
        with _store_and_erased(config, state) as (store, erased):
            entries = [e for e in store.rows(status) if e.email not in erased]  # back since (a bounce report)
            places = sequence_positions(store) if format_ == "csv" else {}
            clicked = clicks.history(store.db) if format_ == "csv" else {}  # only [tracking] per_reader keeps any
            clicked = {e: c for e, c in clicked.items() if e not in erased}
    if format_ == "lines":  # one status asked for: bare addresses; all of them: which is which, aligned
        width = max((len(e.email) for e in entries), default=0) if status is None else 0
        for e in entries:
            typer.echo(one_line(e.email if status is not None else f"{e.email:<{width}}  {e.status}"))
        return
    rows = [[*(one_line(str(getattr(e, c) or "")) for c in COLUMNS), places.get(e.email, "")] for e in entries]
    if clicked:  # who clicked what ('issue#link'), also for readers the store has no status for
        known = {e.email for e in entries}
        rows = [r + [" ".join(clicked.get(r[0], []))] for r in rows]
        if status is None:
            rows += [[email] + [""] * len(COLUMNS) + [" ".join(c)] for email, c in clicked.items()
                     if email not in known]
    # spreadsheet-safe cells; sequences: each one's last step passed; clicks: only with [tracking] per_reader
    write_rows(sys.stdout, [(*COLUMNS, "sequences", *(("clicks",) if clicked else ())), *rows], "\n")


@audience_app.command()
def suppress(
    addresses: AddrArgs,
    reason: Annotated[Optional[str], typer.Option("--reason", metavar="TEXT", help="why (kept in the store's history)")] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Never send to these addresses again (status unsubscribed, source cli)."""
    from newsletter_mailer.audience.store import Change

    with reporting():
        emails = _checked(addresses)
        why = " ".join((reason or "").split())[:200] or None
        with _store(config, state) as store:
            n = store.record([Change(e, "unsubscribed", "cli", reason=why) for e in emails])
    typer.echo(_counted(n, "suppressed") + (f"; {len(emails) - n} already suppressed" if n < len(emails) else ""))


@audience_app.command()
def unsuppress(addresses: AddrArgs, config: ConfigOpt = None, state: StateOpt = None) -> None:
    """Undo a suppression (unsubscribed, bounced or complained): the operator's decision."""
    with reporting():
        emails = _checked(addresses)
        with _store(config, state) as store:
            n = store.unsuppress(emails)
    rest = len(emails) - n
    typer.echo(_counted(n, "unsuppressed") + (f"; {rest} {'was' if rest == 1 else 'were'} not suppressed" if rest else ""))


@audience_app.command()
def erase(
    addresses: Annotated[Optional[list[str]], typer.Argument(metavar="ADDR", help="email addresses",
                                                             show_default=False)] = None,
    file: Annotated[Optional[Path], typer.Option("--file", metavar="FILE", help="more addresses, one a line")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be erased; change nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="erase without asking")] = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """A reader's right to erasure: every row holding the address deleted, its deliveries kept under a
    tombstone that no list can mail again (until the reader signs up and confirms)."""

    from newsletter_mailer.audience import erasure
    from newsletter_mailer.cli.common import confirm, settings_and_state
    from newsletter_mailer.errors import NewsletterError, one_line
    from newsletter_mailer.ledger import key

    with reporting():
        emails = list(dict.fromkeys(key(e) for e in _checked(addresses or []) + _read_file(file)))
        if not emails:
            raise NewsletterError("no address to erase", field="ADDR", hint="name addresses or pass --file FILE")
        handle = settings_and_state(config, state, settings_optional=True)[2]
        store, ledger = handle.audience(create=not dry_run), handle.ledger(create=False)
        try:
            if store is None:  # --dry-run on a state never written: nothing stored anywhere
                raise NewsletterError(f"no audience store in {handle.describe()}: nothing to erase")
            found = [erasure.survey(store, ledger, e) for e in emails]
            if dry_run or not yes:
                for f in found:
                    typer.echo(one_line(_erase_line(f, "would erase")))
            if dry_run:
                typer.echo("nothing erased (--dry-run)")
                return
            confirm(f"Erase {len(emails)} address(es) and everything stored about them? This cannot be undone.",
                    yes, "erase", "nothing erased")
            # The store first: from its commit on, no send plans or batches these readers. Then the
            # ledger, while no send runs (a batch in flight would record its outcome by address).
            done = [erasure.erase(store, ledger, e, ledger_too=False) for e in emails]
            for f in done:
                typer.echo(one_line(_erase_line(f, "erased")))
            _erase_ledger(handle, store, ledger, emails)
        finally:
            for db in (store, ledger):
                if db is not None:
                    db.close()
    gone = sum(any(f.rows.values()) for f in done)
    typer.echo(f"erased {gone} address(es), {len(done) - gone} not found; a tombstone (a keyed hash, no address) "
               f"keeps all {len(done)} from being mailed from any list until they sign up again")
    typer.echo("remove them from your own lists and outbox folders too: those are files this command does not touch")


def _erase_ledger(handle, store, ledger, emails: list[str]) -> None:
    """The ledger's part of `erase`, while every send lock is held: a batch in flight records its
    outcome by address. A live send: one line naming it, exit 1 (the store's part is done)."""
    from newsletter_mailer.audience import erasure
    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.state import send_lock

    try:
        locks = send_lock.hold_all(handle)
    except send_lock.Busy as exc:
        raise NewsletterError(f"the audience store's rows are erased, not yet the send ledger's: {exc.message}",
                              hint="run the same command again when that send has finished "
                                   "(the readers get none of its later batches meanwhile)", exit_code=1) from None
    try:
        for e in emails:
            erasure.erase_ledger(store, ledger, e)
    finally:
        for lock in locks:
            lock.release()


def _read_file(path: Optional[Path]) -> list[str]:
    """--file: one address a line (blank lines and # comments skipped), each checked; one line naming
    the file and line of the first that is not an address."""
    from newsletter_mailer import addresses
    from newsletter_mailer.errors import NewsletterError

    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")  # with a BOM too, as Notepad saves UTF-8
    except (OSError, UnicodeDecodeError) as exc:
        raise NewsletterError(f"cannot read the address file: {getattr(exc, 'strerror', None) or exc}", path=path,
                              field="--file", hint="one address a line, UTF-8") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        raw = line.strip()
        if not raw or raw.startswith("#"):
            continue
        try:
            out.append(addresses.check(raw))
        except ValueError as exc:
            raise NewsletterError(f"not a valid email address: {exc}", path=path, line=n,
                                  hint="one address a line; nothing was erased") from None
    return out


def _erase_line(found, done: str) -> str:
    """`erased ann@example.org: status 1, history 2, …`, or that nothing is stored for it."""
    what = found.describe()
    if what:
        return f"{done} {found.email}: {what}"
    kept = "a tombstone would be kept" if done.startswith("would") else "a tombstone is kept"
    return f"{found.email}: not found" + (" (erased before)" if found.tombstoned else "") + f"; {kept}"


def _counted(n: int, done: str) -> str:
    """`unsuppressed 1 address`, `unsuppressed 2 addresses`, and `nothing unsuppressed` for none."""
    return f"nothing {done}" if n == 0 else f"{done} {n} address" + ("" if n == 1 else "es")


@audience_app.command()
def export(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="the subscribers CSV to write", show_default=False)],
    list_: Annotated[Optional[Path], typer.Option("--list", metavar="CSV", help="subscribers CSV to merge with the store (optional)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace the file if it exists")] = False,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """The list as a subscribers CSV: the --list rows and the confirmed sign-ups, statuses from the store."""
    from newsletter_mailer.audience.export import table, write

    with reporting():
        with _store_and_erased(config, state) as (store, erased):
            rows, left_out = table(store, list_, erased)
        write(rows, csv_path, force)
    typer.echo(f"wrote {show(csv_path)}: {len(rows) - 1} subscriber row(s) (mode 0600)"
               + (f"; left out {left_out} erased on request" if left_out else ""))


@audience_app.command("import")
def import_(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="listmonk's or Mailchimp's export, or a subscribers CSV with a status column", show_default=False)],
    status: Annotated[Optional[str], typer.Option("--status", metavar="STATUS", help="a plain list of addresses (no status column): what they all are, e.g. unsubscribed; never assumed")] = None,
    start_sequence: Annotated[Optional[str], typer.Option("--start-sequence", metavar="NAME", help="start the subscribed readers in this sequence (its start: imported)")] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
) -> None:
    """Statuses from another tool's export (listmonk, Mailchimp, a subscribers CSV), in one transaction."""
    from newsletter_mailer.audience.imports import import_export
    from newsletter_mailer.errors import one_line

    with reporting():
        start = _sequence_start(config, start_sequence) if start_sequence else None
        with _store_and_erased(config, state) as (store, erased):
            imported = import_export(store, csv_path, status, start=start, erased=erased)
    typer.echo(_import_summary(imported))
    if start_sequence:
        typer.echo(f"started {imported.started} reader(s) in the sequence {start_sequence}")
    for line, why in imported.skipped[:50]:
        typer.echo(one_line(f"  skipped line {line}: {why}"))
    if len(imported.skipped) > 50:
        typer.echo(f"  … and {len(imported.skipped) - 50} more skipped")


def _sequence_start(config: Optional[Path], name: str):
    """--start-sequence NAME: the sequence checked first (start: imported), and what enrols the
    subscribed readers of the import, in its transaction."""
    import time

    from newsletter_mailer.errors import NewsletterError
    from newsletter_mailer.sequences import members, model
    from newsletter_mailer.settings import load_settings

    seq = model.find(name, load_settings(config)[1])
    if seq.start != "imported":
        raise NewsletterError(f"the sequence {seq.name} has start: {seq.start}, not imported", path=seq.path,
                              field="start", hint="set start: imported to start readers from an import")
    now = int(time.time())

    def start(store, emails: list[str]) -> int:
        return members.enrol(store, seq.name, emails, now)
    return start


def _import_summary(imported) -> str:
    """Rows read, then what actually changed: an import never lifts an unsubscribe or a bounce."""
    read = len(imported.changes) + len(imported.skipped)
    counts = imported.counts(imported.applied)
    line = f"read {read} row(s): changed {len(imported.applied)}" + (
        " (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")" if counts else "")
    unchanged = len(imported.changes) - len(imported.applied)
    if unchanged:
        line += f", unchanged {unchanged} (already so, or a stronger status such as unsubscribed stands)"
    return line + (f", skipped {len(imported.skipped)}" if imported.skipped else "")


register_sync(audience_app)  # `audience sync` (SendGrid) lives in cli/audience_sync.py, listed last
