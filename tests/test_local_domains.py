"""Intranet lists (delivery.allow_local_domains) and lists where every row is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer import addresses
from newsletter_mailer.cli import app
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.subscribers import SubscriberList, read_suppressions

LOCAL = ["user@localhost", "ann@intranet", "bob@mail.test", "eve@host.internal", "dan@printer.local"]
runner = CliRunner()


@pytest.mark.parametrize("address", LOCAL)
def test_intranet_addresses_need_the_flag(address):
    assert addresses.check(address, allow_local=True) == address
    assert addresses.normalise(address, allow_local=True) == address
    if address != "eve@host.internal":  # email-validator itself lists .internal in newer releases
        with pytest.raises(ValueError):
            addresses.check(address)
        with pytest.raises(ValueError):
            addresses.normalise(address)


@pytest.mark.parametrize("address", ["a@x.onion", "a@in-addr.arpa", "a@x.invalid", "no-at-sign"])
def test_the_flag_accepts_only_local_names(address):
    with pytest.raises(ValueError):
        addresses.check(address, allow_local=True)


def test_the_flag_leaves_email_validator_as_it_was():
    import email_validator

    before = list(email_validator.SPECIAL_USE_DOMAIN_NAMES)
    addresses.check("x@fresh-name.local", allow_local=True)
    assert email_validator.SPECIAL_USE_DOMAIN_NAMES == before
    with pytest.raises(email_validator.EmailNotValidError):
        email_validator.validate_email("x@fresh-name.local", check_deliverability=False)


def test_importing_addresses_patches_nothing():
    """email-validator is patched on first use, not as a side effect of importing the module."""
    code = ("import importlib, newsletter_mailer.addresses as a;"
            "m = importlib.import_module('email_validator.validate_email');"
            "print(getattr(m.validate_email_domain_name, '_shared', False));"
            "a.check('a@example.org');"
            "print(getattr(m.validate_email_domain_name, '_shared', False))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_subscriber_list_and_suppressions_take_the_flag(tmp_path: Path):
    path = tmp_path / "list.csv"
    path.write_text("email\n" + "\n".join(LOCAL) + "\nann@example.org\n", encoding="utf-8")
    supp = tmp_path / "supp.txt"
    supp.write_text("user@localhost\n", encoding="utf-8")
    strict = SubscriberList(path)
    got = [s.email for s in strict]
    assert got[-1] == "ann@example.org" and set(got) <= {"eve@host.internal", "ann@example.org"}
    suppress = read_suppressions([supp], allow_local_domains=True)
    assert suppress == {"user@localhost"} and suppress.invalid == 0
    assert read_suppressions([supp]).invalid == 1
    subs = SubscriberList(path, allow_local_domains=True, suppress=suppress)
    assert [s.email for s in subs] == LOCAL[1:] + ["ann@example.org"]
    assert subs.skips.counts == {"suppressed": 1}


def test_a_list_with_rows_but_no_valid_subscriber_is_an_error(tmp_path: Path):
    path = tmp_path / "list.csv"
    path.write_text("email,name\nuser@localhost,U\nnot-an-address,N\n,only a name\n", encoding="utf-8")
    with pytest.raises(NewsletterError) as info:
        list(SubscriberList(path))
    text = info.value.format()
    assert info.value.path == str(path) and "no valid subscriber (3 rows refused: line 2:" in text
    assert "line 3: 'not-an-address'" in text and "delivery.allow_local_domains = true" in text


@pytest.mark.parametrize("text", ["email\n", "email,status\na@example.org,unsubscribed\nbad,\n"])
def test_an_empty_or_unsubscribed_list_is_not_an_error(tmp_path: Path, text):
    path = tmp_path / "list.csv"
    path.write_text(text, encoding="utf-8")
    assert list(SubscriberList(path)) == []


@pytest.fixture
def folder(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    (newsletter_dir / "intranet.csv").write_text("email,name\nann@intranet,Ann\nbob@mail.test,Bob\n",
                                                 encoding="utf-8")
    return newsletter_dir


def send(*args: str):
    return runner.invoke(app, ["send", "issues/mini.yaml", "--list", "intranet.csv", "--provider", "outbox",
                               *args])


def test_cli_refuses_a_list_where_every_row_is_refused(folder: Path):
    r = send("--dry-run")
    assert r.exit_code == 2, r.output
    assert "intranet.csv: no valid subscriber (2 rows refused: line 2: 'ann@intranet'" in r.output
    assert "Traceback" not in r.output and "nothing to send" not in r.output
    assert not (folder / "outbox").exists()


def test_cli_sends_to_an_intranet_list_with_allow_local_domains(folder: Path):
    toml = folder / "newsletter.toml"
    toml.write_text(toml.read_text().replace("[delivery]\n", "[delivery]\nallow_local_domains = true\n"))
    assert "allow_local_domains = true" in toml.read_text()
    r = send("--yes")
    assert r.exit_code == 0, r.output
    assert "sent: 2, failed: 0" in r.output
    assert len(list((folder / "outbox" / "mini").glob("*.eml"))) == 2
