"""The storage layer under the ledger and the audience store: a SQLite file or PostgreSQL.

One SQL dialect in the callers: `?` placeholders, `INSERT … ON CONFLICT`, `RETURNING`;
`Database.execute` translates them for psycopg (`%s`), `begin()` is `BEGIN IMMEDIATE` on
SQLite (writers queue) and `BEGIN` on PostgreSQL (row locks do the queuing). Both run in
autocommit outside an explicit transaction, so every write the callers commit is durable
when the call returns. Connection trouble becomes one NewsletterError naming host:port,
never the password.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import parse_qs, urlsplit

from newsletter_mailer.errors import NewsletterError, one_line

URL_ENV = "NEWSLETTER_DATABASE_URL"
SCHEMES = ("postgresql", "postgres")
NO_PASSWORD = "the password only from PGPASSWORD or ~/.pgpass"


def _driver_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite works without it
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


ERRORS = _driver_errors()  # what a storage failure raises, whichever backend (web.py answers 503)


def _data_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return (sqlite3.DataError, sqlite3.IntegrityError)
    return (sqlite3.DataError, sqlite3.IntegrityError, psycopg.DataError, psycopg.IntegrityError)


# What a value the database cannot hold raises (a number out of range, a NUL in text): the
# input's fault, not the store's; with Python's own refusals of such values.
DATA_ERRORS = (ValueError, OverflowError, TypeError, *_data_errors())
# Every statement planned when it runs, never a prepared generic plan: one cached while a table
# was tiny (a sequential scan) stays in use as it grows, and made each ledger UPDATE of a
# 100,000-recipient send scan the whole table (benchmarks/RESULTS.md, "Shared state: PostgreSQL").
CONNECT = {"autocommit": True, "prepare_threshold": None}


def check_url(url: str, *, from_file: bool) -> str:
    """A PostgreSQL URL; one written in newsletter.toml may not carry a password."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError("must be a postgresql://user@host/database URL")
    if from_file and (parts.password is not None or "password" in parse_qs(parts.query)):
        raise ValueError(NO_PASSWORD)
    return url


def database_url(settings: Any | None, env: Mapping[str, str]) -> str | None:
    """NEWSLETTER_DATABASE_URL (the environment wins) or [state] database_url; None: SQLite files."""
    url = env.get(URL_ENV) or None
    if url is not None:
        try:
            return check_url(url, from_file=False)
        except ValueError as exc:
            raise NewsletterError(str(exc), field=URL_ENV) from None
    return settings.state.database_url if settings is not None else None


def where(url: str) -> str:
    """host:port/database of a URL for messages: never the user's password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is named by its scheme only
        return "the configured database"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def unreachable(url: str, exc: BaseException, *, named_by: str = "NEWSLETTER_DATABASE_URL or [state] database_url",
                ) -> NewsletterError:
    """The one wording for a database that cannot be used (its message redacted of the URL);
    named_by says where the URL came from (`state copy --to` names its own option)."""
    text = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    text = text.replace(url, where(url))
    return NewsletterError(f"cannot reach the database at {where(url)} — {text}",
                           hint=f"check {named_by}, and that the server runs")


@contextmanager
def closed_on_error(db: Database, url: str) -> Iterator[Database]:
    """Setting up a fresh connection: on any failure it is closed, and a driver error becomes
    the one line of `unreachable` (a NewsletterError passes through as it is)."""
    try:
        yield db
    except NewsletterError:
        db.close()
        raise
    except ERRORS as exc:
        db.close()
        raise unreachable(url, exc) from None



class Database:
    """One connection, SQLite or PostgreSQL, with the callers' dialect translated."""

    def __init__(self, conn: Any, dialect: str, label: str):
        self.conn = conn
        self.dialect = dialect      # "sqlite" or "postgres"
        self.label = label          # a path or host:port/db, for messages

    @classmethod
    def sqlite(cls, path: Path) -> Database:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(conn, "sqlite", str(path))

    @classmethod
    def postgres(cls, url: str) -> Database:
        import psycopg

        try:
            conn = psycopg.connect(url, connect_timeout=10, application_name="newsletter-mailer", **CONNECT)
        except psycopg.Error as exc:
            raise unreachable(url, exc) from None
        return cls(conn, "postgres", where(url))

    @property
    def postgres_backend(self) -> bool:
        return self.dialect == "postgres"

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s") if self.postgres_backend else text

    def execute(self, text: str, args: Iterable[Any] = ()) -> Any:
        return self.conn.execute(self.sql(text), tuple(args))

    def executemany(self, text: str, rows: Iterable[Iterable[Any]]) -> None:
        if self.postgres_backend:
            with self.conn.cursor() as cur:
                cur.executemany(self.sql(text), [tuple(r) for r in rows])
        else:
            self.conn.executemany(text, rows)

    def script(self, text: str) -> None:
        """Several statements separated by ';' (DDL), inside the caller's transaction."""
        for statement in filter(None, (s.strip() for s in text.split(";"))):
            self.conn.execute(self.ddl(statement))

    def ddl(self, text: str) -> str:
        """Table definitions written for SQLite, as PostgreSQL spells them."""
        if not self.postgres_backend:
            return text
        text = text.replace(" WITHOUT ROWID", "")
        text = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", text)
        return re.sub(r"\bINTEGER\b", "BIGINT", text)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE (SQLite) / BEGIN (PostgreSQL) … COMMIT, rolled back on any error."""
        self.conn.execute("BEGIN" if self.postgres_backend else "BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: writes undone on any error without losing the transaction's others."""
        self.conn.execute("SAVEPOINT one")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO SAVEPOINT one")
            self.conn.execute("RELEASE SAVEPOINT one")
            raise
        self.conn.execute("RELEASE SAVEPOINT one")

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except ERRORS:  # the connection died: the server rolled it back already
            pass

    def lock(self, name: str) -> None:
        """Writers of `name` take turns until the transaction ends; SQLite's BEGIN IMMEDIATE
        already serialises every writer."""
        if self.postgres_backend:
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))

    def lock_each(self, space: int, keys: Iterable[int]) -> None:
        """Transaction locks (space, key) for each key, in one statement, taken in ascending order
        so that two writers of overlapping sets never deadlock (the two-integer keys are apart
        from `lock`'s and send_lock's single ones); SQLite already serialises every writer."""
        keys = sorted(set(keys))
        if self.postgres_backend and keys:
            self.conn.execute("SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k",
                              (space, keys))

    def json_values(self) -> str:
        """A subquery of the values of a JSON array given as one `?` parameter."""
        return ("SELECT json_array_elements_text(?::json)" if self.postgres_backend
                else "SELECT value FROM json_each(?)")

    def close(self) -> None:
        self.conn.close()
