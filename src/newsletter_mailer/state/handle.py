"""The one state handle: where the ledger, the audience store, the send locks and the secret live.

Resolved once per command (or per web app) from the settings, the environment and `--state`,
then passed down; everything that reads or writes state opens it through this object, as
Django's connection handler or listmonk's `core`. With a PostgreSQL URL no SQLite file is ever
made or read; without one, the SQLite files sit in the state folder. No constructor of the
ledger or the store takes a database address that could be left out: a caller that forgets
the database is impossible, not just unlikely. The folder still holds what is per host on
either backend: the secret file (unless NEWSLETTER_SECRET gives it) and, on SQLite, the locks.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.state.db import ERRORS, Database, database_url, where
from newsletter_mailer.state.folder import state_dir, state_folder

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.audience.store import Audience
    from newsletter_mailer.ledger import Ledger
    from newsletter_mailer.state.pool import Stores
    from newsletter_mailer.state.send_lock import SendLock

LEDGER_FILE = "ledger.sqlite3"
AUDIENCE_FILE = "audience.sqlite3"
DATABASE_FILES = (LEDGER_FILE, AUDIENCE_FILE)


@dataclass(frozen=True)
class State:
    """The state's location; `url` None means SQLite files in `folder`."""

    folder: Path
    url: str | None = field(default=None, repr=False)  # repr: never print a URL that may hold a user name

    @classmethod
    def resolve(cls, settings: Any | None, settings_dir: Path | None, env: Mapping[str, str],
                given: Path | None = None) -> State:
        """--state (given), else .newsletter/ next to newsletter.toml; NEWSLETTER_DATABASE_URL, else
        [state] database_url. Without settings (--state alone) only the environment can name a database."""
        if given is None and settings_dir is None:
            raise NewsletterError("no state folder: pass --state DIR or run next to newsletter.toml")
        folder = given if given is not None else state_dir(settings_dir)
        return cls(Path(folder), database_url(settings, env))

    @property
    def postgres(self) -> bool:
        return self.url is not None

    def describe(self) -> str:
        """For messages: where the state is, never the password."""
        return f"PostgreSQL at {where(self.url)}" if self.url is not None else f"SQLite in {self.folder}"

    def exists(self, file: str) -> bool:
        """Whether a reader would find something: a database always exists; a SQLite file maybe not."""
        return self.url is not None or (self.folder / file).exists() or (self.folder / file).is_symlink()

    # -- what lives in the state -------------------------------------------------------------

    def ledger(self, *, create: bool = True) -> Ledger | None:
        """The send ledger; with create=False (readers: status, report) None when there is none yet."""
        from newsletter_mailer.ledger import Ledger, upgrade_sqlite

        if not create and not self.exists(LEDGER_FILE):
            return None
        return Ledger(self._open("ledger", LEDGER_FILE, "the send ledger", upgrade_sqlite))

    def audience(self, *, create: bool = True) -> Audience | None:
        """The audience store; with create=False None when there is none yet (never made just to be read)."""
        from newsletter_mailer.audience.store import Audience

        if not create and not self.exists(AUDIENCE_FILE):
            return None
        return Audience(self._open("audience", AUDIENCE_FILE, "the audience store"))

    def send_lock(self, slug: str) -> SendLock:
        """One send of the issue at a time: an flock in the folder, or an advisory lock in the database."""
        from newsletter_mailer.state import send_lock

        return send_lock.acquire(slug, self)

    def stores(self) -> Stores:
        """The web app's per-request audience stores (one connection, or a pool on PostgreSQL)."""
        from newsletter_mailer.state.pool import Stores

        return Stores(self)

    def secret(self, env: Mapping[str, str], *, create: bool = True) -> tuple[bytes, str | None]:
        """The key that seals readers' links: NEWSLETTER_SECRET, else the file in the folder."""
        from newsletter_mailer import unsubscribe

        return unsubscribe.load_secret(self.folder, dict(env), create=create)

    # -- opening -------------------------------------------------------------------------------

    def _open(self, component: str, file: str, label: str,
              upgrade: Callable[[Database], None] | None = None) -> Database:
        from newsletter_mailer.state import migrations

        if self.url is not None:
            return migrations.open_postgres(self.url, component)
        path = self.folder / file
        try:
            _create_private(path)
            db = Database.sqlite(path)
            try:
                if upgrade is not None:
                    upgrade(db)
                migrations.migrate(db, component)
            except BaseException:
                db.close()
                raise
        except (OSError, *ERRORS) as exc:
            raise NewsletterError(f"cannot open {label}: {exc}", path=path, hint="check the --state folder") from None
        return db


def _create_private(path: Path) -> None:
    """The file made 0600 by us, never through a link: it lists every reader's address."""
    from newsletter_mailer import files

    state_folder(path.parent)
    if path.is_symlink():  # SQLite would follow it: the file must be where it is said to be
        raise NewsletterError(f"{path.name} is a link", path=path, hint="remove the link")
    try:
        files.create_new(path, b"", files.PRIVATE)
    except FileExistsError:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise OSError(f"{path} is not a regular file (a link?)") from None
