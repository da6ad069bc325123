"""`newsletter state copy --to URL`: an existing SQLite state moved into PostgreSQL, verified.

Every table of the ledger and the audience store (migrations.TABLES) is copied in one
transaction of its own, and its row count checked against the source's before that transaction
commits: a table is there whole or not at all. A target that already holds rows is refused
unless `force`, which replaces those tables' rows (a copy is a move, not a merge: merging two
ledgers could hide a recipient's 'sent' row behind another's). History ids are kept, and the id
sequence moved past them.
"""

from __future__ import annotations

from pathlib import Path

from newsletter_mailer.state import migrations
from newsletter_mailer.state.db import ERRORS, Database, unreachable
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.handle import State


def _sources(source: State) -> dict[str, Database]:
    """The source state's SQLite files that exist, opened (and upgraded) as a send would."""
    opened = {"ledger": source.ledger(create=False), "audience": source.audience(create=False)}
    out = {component: part.db for component, part in opened.items() if part is not None}
    if not out:
        raise NewsletterError("nothing to copy: no ledger or audience store here", path=source.folder,
                              hint="point --state at the folder holding ledger.sqlite3")
    return out


def _columns(db: Database, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def _refuse_rows(target: Database, tables: list[str]) -> None:
    """Before anything is copied: a target with rows in any table is refused (without --force)."""
    full = [t for t in tables if target.execute(f"SELECT count(*) FROM {t}").fetchone()[0]]
    if full:
        raise NewsletterError(f"the database at {target.label} already has rows in {', '.join(full)}",
                              hint="copy into a fresh database, or pass --force to replace them")


def _copy_table(source: Database, target: Database, table: str) -> int:
    """One table in one transaction, replacing its rows; its count verified before COMMIT."""
    names = ", ".join(_columns(source, table))
    with target.transaction():
        target.execute(f"DELETE FROM {table}")
        with target.conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in source.execute(f"SELECT {names} FROM {table}"):
                copy.write_row(row)
        copied = target.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        expected = source.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if copied != expected:
            raise NewsletterError(f"{table}: {copied} row(s) arrived of {expected}; nothing of it was kept")
        if table == "history":
            target.execute("SELECT setval(pg_get_serial_sequence('history', 'id'), "
                           "coalesce((SELECT max(id) FROM history), 0) + 1, false)")
    return copied


TO = "the --to URL"  # where a failure points: the target was given on the command line, not configured


def copy_state(state_dir: Path, url: str, *, force: bool = False) -> list[tuple[str, int]]:
    """Copy the SQLite state in state_dir into the database at url (initialised first); (table, rows) each."""
    try:
        return _copy(state_dir, url, force)
    except NewsletterError as exc:
        if exc.message.startswith("cannot reach the database"):
            exc.hint = f"check {TO}, and that the server runs"
        raise


def _copy(state_dir: Path, url: str, force: bool) -> list[tuple[str, int]]:
    migrations.init_database(url)
    sources = _sources(State(state_dir))  # the source is SQLite files by definition, whatever is configured
    target = Database.postgres(url)
    pairs = [(sources[component], table) for component, tables in migrations.TABLES.items()
             if component in sources for table in tables]
    try:
        if not force:
            _refuse_rows(target, [table for _, table in pairs])
        return [(table, _copy_table(source, target, table)) for source, table in pairs]
    except ERRORS as exc:
        raise unreachable(url, exc, named_by=TO) from None
    finally:
        target.close()
        for db in sources.values():
            db.close()
