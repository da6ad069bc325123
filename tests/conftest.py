"""Shared fixtures: the repository's example newsletter and a small issue of the test's own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ISSUE = ROOT / "issues" / "2020-09-cscp.yaml"
EXAMPLE_SETTINGS = ROOT / "newsletter.toml"
EXAMPLE_LIST = ROOT / "subscribers.csv.example"

# The example uses token links ([web] base_url); tests of a custom unsubscribe page add this line.
CUSTOM_UNSUBSCRIBE = 'unsubscribe_url = "https://example.org/unsubscribe?email={{ email }}&token={{ token }}"'


def with_custom_unsubscribe(toml: str, line: str = CUSTOM_UNSUBSCRIBE) -> str:
    """The example settings with an unsubscribe_url line (a page of the sender's own), before unsubscribe_mailto."""
    anchor = "\nunsubscribe_mailto = "
    assert anchor in toml and "\nunsubscribe_url = " not in toml
    return toml.replace(anchor, f"\n{line}{anchor}", 1)


EXAMPLE_WEB = '[web]\nbase_url = "https://example.org/news"\n'


def without_web(toml: str) -> str:
    """The example settings without their [web] table, for a test that writes a [web] of its own."""
    assert EXAMPLE_WEB in toml
    return toml.replace(EXAMPLE_WEB, "", 1)


def _no_skips_on_ci(report) -> None:
    """On CI (CI=true) a skip is a failure: the README's test command installs everything the
    tests need, so a skip there means a missing install step (docs/development.md)."""
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI", "").lower() == "true":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped on CI, where nothing may be: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _no_skips_on_ci((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _no_skips_on_ci((yield).get_result())  # a module-level importorskip

MINI_ISSUE = """\
subject: 'Hello {{ name | default("friend") }}'
preheader: A short preview line
date: 2020-09-01
intro: "Dear {{ name | default('reader') }}, welcome."
sections:
  - heading: First
    body: |
      Some *text* with a [link](https://example.org/x).

      - one
      - two
    image:
      src: https://example.org/a.png
      alt: an image
    links:
      - label: Read the story
        text: Story
        url: https://example.org/story
  - heading: Second
    body: For {{ school_year | default("all years") }}.
"""


@pytest.fixture
def newsletter_dir(tmp_path: Path) -> Path:
    """A newsletter folder of the test's own: the example settings plus a small issue."""
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def settings(newsletter_dir: Path):
    from newsletter_mailer.settings import load_settings

    return load_settings(newsletter_dir / "newsletter.toml")[0]


@pytest.fixture
def composed(newsletter_dir: Path, settings):
    """The small issue, composed once (as a send does)."""
    from newsletter_mailer.compose import compose

    return compose(newsletter_dir / "issues" / "mini.yaml", settings, newsletter_dir)


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL server of the session's own (tests/helpers/postgres.py), stopped at the end.
    Missing binaries skip the PostgreSQL runs, except on CI (CI=true), where they fail."""
    import os

    from tests.helpers import postgres

    binaries = postgres.bin_dir()
    if binaries is None:
        reason = "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run .ci/install-system.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = postgres.Cluster(binaries).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> str:
    """Run the test against each backend of the ledger and the audience store."""
    return request.param


@pytest.fixture
def database_url(backend, request) -> str | None:
    """None for SQLite (files in the state folder); for PostgreSQL a fresh database, initialised."""
    if backend == "sqlite":
        return None
    from newsletter_mailer.state.migrations import init_database

    url = request.getfixturevalue("pg_cluster").new_database()
    init_database(url)
    return url


def use_database(monkeypatch, database_url: str | None) -> None:
    """The commands of this test on database_url's PostgreSQL, or (None) on SQLite files whatever the
    environment says: NEWSLETTER_DATABASE_URL set or removed for the test."""
    if database_url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("NEWSLETTER_DATABASE_URL", raising=False)


PROVIDER_ENV = ("SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_SECURITY",
                "SENDGRID_API_KEY", "SENDGRID_API_HOST", "NEWSLETTER_DEBUG")


def isolated_newsletter(tmp_path: Path, monkeypatch, secret: str) -> Path:
    """The example settings and the small issue in tmp_path/nl, the current folder, with no
    provider settings from the environment and the given unsubscribe secret."""
    folder = tmp_path / "nl"
    (folder / "issues").mkdir(parents=True)
    shutil.copy(EXAMPLE_SETTINGS, folder / "newsletter.toml")
    (folder / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    monkeypatch.chdir(folder)
    for var in PROVIDER_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEWSLETTER_SECRET", secret)
    monkeypatch.setenv("NEWSLETTER_BACKOFF_BASE", "0.005")
    return folder
