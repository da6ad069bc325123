"""Where the ledger and the audience store live: SQLite files in the state folder, or
PostgreSQL for a team (db: one small layer over both; migrations: versioned schemas;
copy: `newsletter state copy`)."""

from newsletter_mailer.state.handle import State  # noqa: E402,F401 - the one way to open the state
