"""[delivery] settings that would crash or stall a send are refused by `check`, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app

runner = CliRunner()


def with_delivery(folder: Path, line: str) -> None:
    toml = folder / "newsletter.toml"
    text = toml.read_text(encoding="utf-8")
    assert "[delivery]\n" in text
    toml.write_text(text.replace("[delivery]\n", f"[delivery]\n{line}\n"), encoding="utf-8")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e-300", "-1", "0.001", "1e9"])
def test_an_impossible_rate_is_one_line_exit_2(newsletter_dir: Path, monkeypatch, value):
    monkeypatch.chdir(newsletter_dir)
    with_delivery(newsletter_dir, f"rate = {value}")
    r = runner.invoke(app, ["check", "issues/mini.yaml"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "newsletter.toml" in lines[0] and "delivery.rate" in lines[0], r.output
    assert "internal error" not in r.output


def test_send_with_a_tiny_rate_sends_nothing(newsletter_dir: Path, monkeypatch):
    """rate = 1e-300 once sent one message and then failed: refused before the first one now."""
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", "r3eHUCfuibrbQDmNwrOZWjS3lLTOeyIuQ7WNC4qgklA")
    (newsletter_dir / "list.csv").write_text("email\nann@example.org\nbob@example.org\n", encoding="utf-8")
    with_delivery(newsletter_dir, "rate = 1e-300")
    r = runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes"])
    assert r.exit_code == 2 and "delivery.rate" in r.output, r.output
    assert not (newsletter_dir / "outbox").exists()


@pytest.mark.parametrize("value, expected", [("0", None), ("0.01", 0.01), ("2", 2.0), ("10000", 10000.0)])
def test_sensible_rates_are_kept_and_0_means_no_limit(newsletter_dir: Path, value, expected):
    from newsletter_mailer.settings import load_settings

    with_delivery(newsletter_dir, f"rate = {value}")
    assert load_settings(newsletter_dir / "newsletter.toml")[0].delivery.rate == expected
