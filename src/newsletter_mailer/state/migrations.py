"""Versioned schemas of the ledger and the audience store, one `schema_version` row each.

Migrations are numbered per component (v1 = the tables as they were when versioning began) and
each runs in its own transaction with its version bump: a crash leaves the old version whole.
SQLite files upgrade themselves when opened (one user, nothing to run); a PostgreSQL database
is migrated only by `newsletter state init`, and a send or serve against an older schema stops
(`require`): a shared database is never changed silently by whoever happens to send.
"""

from __future__ import annotations

from datetime import datetime, timezone

from newsletter_mailer.state.db import ERRORS, Database, closed_on_error, unreachable
from newsletter_mailer.errors import NewsletterError

DELIVERIES = """
CREATE TABLE IF NOT EXISTS {name} (
    issue       TEXT NOT NULL,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'failed', 'uncertain', 'scheduled',
                                                'cancelled')),
    provider    TEXT,
    message_id  TEXT,
    reason      TEXT,
    permanent   INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL,
    batch_id    TEXT,
    PRIMARY KEY (issue, email)
) WITHOUT ROWID
"""

LEDGER_V1 = DELIVERIES.format(name="deliveries") + """;
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (issue, status);
CREATE TABLE IF NOT EXISTS schedules (
    batch_id    TEXT PRIMARY KEY,
    issue       TEXT NOT NULL,
    send_at     INTEGER NOT NULL,
    zone        TEXT,
    created_at  TEXT NOT NULL
)
"""

AUDIENCE_STATUSES = ("pending", "subscribed", "unsubscribed", "bounced", "complained")

AUDIENCE_V1 = f"""
CREATE TABLE IF NOT EXISTS audience (
    email       TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN {AUDIENCE_STATUSES!r}),
    source      TEXT NOT NULL,
    issue       TEXT,
    reason      TEXT,
    name        TEXT,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audience_status ON audience (status);
CREATE TABLE IF NOT EXISTS history (
    id          INTEGER PRIMARY KEY,
    email       TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    issue       TEXT,
    reason      TEXT,
    name        TEXT,
    applied     INTEGER NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_email ON history (email);
CREATE TABLE IF NOT EXISTS rate (
    bucket      TEXT PRIMARY KEY,
    win         INTEGER NOT NULL,
    hits        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    email    TEXT NOT NULL,
    created  INTEGER NOT NULL,
    source   TEXT NOT NULL,
    issue    TEXT,
    status   TEXT,
    reason   TEXT,
    PRIMARY KEY (email, created)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sendgrid_sync (
    list     TEXT PRIMARY KEY,
    since    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sendgrid_events (
    id       TEXT PRIMARY KEY,
    seen     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sendgrid_events_seen ON sendgrid_events (seen);
CREATE TABLE IF NOT EXISTS issue_events (
    issue    TEXT NOT NULL,
    event    TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (issue, event)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS issue_clicks (
    issue    TEXT NOT NULL,
    url      TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (issue, url)
) WITHOUT ROWID
"""

# v2: what `newsletter inbox` remembers — temporary failures per address and issue (the soft
# limit counts different issues), and the messages already recorded (a second run counts nothing).
AUDIENCE_V2 = """
CREATE TABLE IF NOT EXISTS soft_bounces (
    email       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    reason      TEXT,
    at          TEXT NOT NULL,
    PRIMARY KEY (email, issue)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processed (
    digest      TEXT PRIMARY KEY,
    at          TEXT NOT NULL
) WITHOUT ROWID
"""

# v4: [tracking] clicks (audience/clicks.py) — each issue's links as sent (the only place a click
# redirects to), per-link totals, the keyed reader hashes that make counts unique (dropped after
# [tracking] keep_days) and, only with [tracking] per_reader, who clicked what.
AUDIENCE_V4 = """
CREATE TABLE IF NOT EXISTS tracked_links (
    issue       TEXT NOT NULL,
    link        INTEGER NOT NULL,
    url         TEXT NOT NULL,
    sent_at     TEXT NOT NULL,
    PRIMARY KEY (issue, link, url)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS link_counts (
    issue       TEXT NOT NULL,
    link        INTEGER NOT NULL,
    clicks      INTEGER NOT NULL,
    uniques     INTEGER NOT NULL,
    scanners    INTEGER NOT NULL,
    PRIMARY KEY (issue, link)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS click_seen (
    issue       TEXT NOT NULL,
    reader      TEXT NOT NULL,
    link        INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('reader', 'scanner')),
    at          INTEGER NOT NULL,
    PRIMARY KEY (issue, reader, link)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS click_seen_at ON click_seen (at);
CREATE TABLE IF NOT EXISTS reader_clicks (
    email       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    link        INTEGER NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reader_clicks_email ON reader_clicks (email)
"""

# v5: erased readers (`audience erase`, audience/erasure.py) — a keyed hash of each erased address
# (erasure.tombstone), no address: an old list that brings one back is skipped, not mailed. Its key
# is random, made with the first erasure and kept here: never rotated with the newsletter secret,
# so a tombstone holds for as long as the state does.
AUDIENCE_V5 = """
CREATE TABLE IF NOT EXISTS erased (
    hash        TEXT PRIMARY KEY,
    at          TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erasure_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    key         TEXT NOT NULL
)
"""

# v2: who is sending which issue (state/send_lock.py): the row that names the advisory lock's
# holder. Not copied by `state copy`: it describes live sends, not state.
LEDGER_V2 = """
CREATE TABLE IF NOT EXISTS senders (
    issue       TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started     TEXT NOT NULL,
    backend     INTEGER NOT NULL
) WITHOUT ROWID
"""

# v3: the variant each reader was sent (the sections their for: conditions gave them); NULL for
# an issue without conditions and for rows written before.
LEDGER_V3 = "ALTER TABLE deliveries ADD COLUMN variant TEXT"

# v3: readers in welcome sequences (sequences/): when each started, the steps they have passed
# (by slug: a step added before them is never sent) and when the last one went. In the store,
# beside the statuses, so that a run finds who is due, and not suppressed, in one query.
AUDIENCE_V3 = """
CREATE TABLE IF NOT EXISTS sequence_readers (
    sequence    TEXT NOT NULL,
    email       TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    last_step   TEXT,
    passed      TEXT NOT NULL DEFAULT '',
    last_at     INTEGER,
    PRIMARY KEY (sequence, email)
) WITHOUT ROWID
"""

# v4: subject tests (ab_test.py) — the test of an issue (its other subject, the sample's share, when
# its wait ends, the winner once chosen) and each sampled reader's variant.
LEDGER_V4 = """
CREATE TABLE IF NOT EXISTS ab_tests (
    issue       TEXT PRIMARY KEY,
    subject_b   TEXT NOT NULL,
    share       REAL NOT NULL,
    wait_until  INTEGER,
    winner      TEXT,
    verdict     TEXT,
    started_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ab_variants (
    issue       TEXT NOT NULL,
    email       TEXT NOT NULL,
    variant     TEXT NOT NULL CHECK (variant IN ('A', 'B')),
    PRIMARY KEY (issue, email)
) WITHOUT ROWID
"""

# component -> its migrations in order; migration i (from 0) takes the schema to version i + 1.
MIGRATIONS: dict[str, tuple[str, ...]] = {"ledger": (LEDGER_V1, LEDGER_V2, LEDGER_V3, LEDGER_V4),
                                          "audience": (AUDIENCE_V1, AUDIENCE_V2, AUDIENCE_V3, AUDIENCE_V4,
                                                       AUDIENCE_V5)}
# The tables of each component, in the order `state copy` fills them.
TABLES = {"ledger": ("deliveries", "schedules", "ab_tests", "ab_variants"),
          "audience": ("audience", "history", "rate", "blocks", "sendgrid_sync", "sendgrid_events",
                       "issue_events", "issue_clicks", "soft_bounces", "processed", "sequence_readers",
                       "tracked_links", "link_counts", "click_seen", "reader_clicks", "erased", "erasure_key")}
VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_version (
    component   TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    applied_at  TEXT NOT NULL
)
"""


def version(db: Database, component: str) -> int:
    """The component's schema version; 0 when the database has none yet."""
    if db.postgres_backend:
        present = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    else:
        present = db.execute("SELECT 1 FROM sqlite_master WHERE name='schema_version'").fetchone() is not None
    if not present:
        return 0
    row = db.execute("SELECT version FROM schema_version WHERE component=?", (component,)).fetchone()
    return row[0] if row else 0


def latest(component: str) -> int:
    return len(MIGRATIONS[component])


def migrate(db: Database, component: str) -> tuple[int, int]:
    """Every pending migration, each in one transaction with its version; (before, after)."""
    with db.transaction():
        db.lock("newsletter schema_version")  # two `state init` at once: one waits, then finds it done
        db.script(VERSIONS)
    before = version(db, component)
    for number in range(before + 1, latest(component) + 1):
        with db.transaction():
            db.lock("newsletter schema_version")
            if version(db, component) >= number:
                continue
            db.script(MIGRATIONS[component][number - 1])
            db.execute("INSERT INTO schema_version (component, version, applied_at) VALUES (?,?,?) "
                       "ON CONFLICT (component) DO UPDATE SET version=excluded.version, "
                       "applied_at=excluded.applied_at",
                       (component, number, datetime.now(timezone.utc).isoformat(timespec="seconds")))
    return before, version(db, component)


def require(db: Database, component: str) -> None:
    """PostgreSQL: the schema must be this program's version; only `state init` changes it."""
    found, wanted = version(db, component), latest(component)
    if found == wanted:
        return
    if found > wanted:
        raise NewsletterError(f"the database at {db.label} has a newer schema ({component} v{found}) than this "
                              f"version of newsletter knows (v{wanted})", hint="upgrade newsletter-mailer")
    state = "has no newsletter schema" if found == 0 else f"has an older schema ({component} v{found} of v{wanted})"
    raise NewsletterError(f"the database at {db.label} {state}: run `newsletter state init`",
                          hint="migrations run only when asked, never during a send")


def open_postgres(url: str, component: str) -> Database:
    """A connection to an initialised PostgreSQL schema of this version, or one line saying why not."""
    with closed_on_error(Database.postgres(url), url) as db:
        require(db, component)
    return db


def init_database(url: str) -> dict[str, tuple[int, int]]:
    """`newsletter state init`: every component migrated to this version; {component: (before, after)}."""
    db = Database.postgres(url)
    try:
        return {component: migrate(db, component) for component in MIGRATIONS}
    except ERRORS as exc:
        raise unreachable(url, exc) from None
    finally:
        db.close()
