"""`newsletter init`: a new newsletter folder that works at once, and never a file overwritten."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import ROOT

runner = CliRunner()
TODAY = dt.date.today()
FILES = ("newsletter.toml", f"issues/{TODAY:%Y-%m}-first-issue.yaml", "subscribers.csv", "templates/README.md")


def init(*args) -> object:
    result = runner.invoke(app, ["init", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def newsletter(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("NEWSLETTER_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "newsletter_mailer", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_init_in_a_new_folder_creates_everything(tmp_path):
    d = tmp_path / "news"
    result = init(d)
    for rel in FILES:
        assert (d / rel).is_file(), rel
        assert f"created {d / rel}" in result.stdout
    assert list((d / "templates").iterdir()) == [d / "templates" / "README.md"]
    assert "newsletter compose issues/" in result.stdout and "--watch" in result.stdout


def test_init_defaults_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = init()
    for rel in FILES:
        assert (tmp_path / rel).is_file()
        assert f"created {rel}" in result.stdout
    assert "cd " not in result.stdout


def test_settings_load_and_every_setting_is_commented(tmp_path):
    from newsletter_mailer.settings import Brand, Delivery, SendGridSettings, Settings, SmtpSettings, load_settings

    init(tmp_path)
    settings, where = load_settings(tmp_path / "newsletter.toml")
    assert where == tmp_path.resolve()
    assert settings.delivery.provider == "outbox"  # nothing leaves the machine until the user says so
    lines = (tmp_path / "newsletter.toml").read_text(encoding="utf-8").splitlines()
    keys = 0
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            keys += 1
            assert lines[i - 1].startswith("#"), f"no comment above: {line}"
    assert keys >= 15
    text = "\n".join(lines)
    for model in (Settings, Brand, Delivery, SmtpSettings, SendGridSettings):
        for name in model.model_fields:
            assert re.search(rf"^(# )?{name} = |^\[[a-z.]*{name}\]", text, re.M), f"{model.__name__}.{name}"


def test_first_issue_is_dated_today_and_composes_without_check_errors(tmp_path):
    from newsletter_mailer.checks import failures, run_checks
    from newsletter_mailer.compose import compose, load_issue
    from newsletter_mailer.settings import load_settings

    init(tmp_path)
    path = tmp_path / FILES[1]
    issue = load_issue(path)
    assert issue.date == TODAY and not issue.draft
    settings, sdir = load_settings(tmp_path / "newsletter.toml")
    checks = run_checks(compose(path, settings, sdir))
    assert failures(checks) == []
    # only the placeholder addresses init writes, until the user sets their own
    assert [(c.name, c.field) for c in checks if c.level == "warning"] == [("placeholder", "web_base_url"),
                                                                           ("placeholder", "web.base_url")]


def test_the_starter_image_comment_matches_the_default_layout(tmp_path):
    """The commented-out image, switched on as written, lands where the comment says: above the
    text (image-top), with `layout:` named as the way to put it beside the text."""
    from newsletter_mailer.compose import load_issue

    init(tmp_path)
    path = tmp_path / FILES[1]
    text = path.read_text(encoding="utf-8")
    assert "above the" in text and "layout: image-left" in text and "beside its text:" not in text
    on = re.sub(r"(?m)^    # (image:|  src:|  alt:)", r"    \1", text)
    path.write_text(on.replace("src: images/photo.png", "src: https://example.org/photo.png"), encoding="utf-8")
    assert load_issue(path).sections[-1].layout == "image-top"


def test_subscribers_csv_has_the_header_and_one_example_row(tmp_path):
    from newsletter_mailer.subscribers import RESERVED

    init(tmp_path)
    with open(tmp_path / "subscribers.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["email", "name", "status", "tags"] == list(RESERVED)
    assert len(rows) == 2 and rows[1][0].endswith("@example.org") and rows[1][2] == "subscribed"


def test_templates_readme_names_every_built_in_template(tmp_path):
    from newsletter_mailer.render import builtin_templates

    init(tmp_path)
    readme = (tmp_path / "templates" / "README.md").read_text(encoding="utf-8")
    for t in sorted(builtin_templates().glob("*.j2")):
        assert f"`{t.name}`" in readme, t.name
    web = sorted(builtin_templates().glob("web/*.j2"))
    assert web, "the built-in web/ pages"
    for t in web:
        assert f"`web/{t.name}`" in readme, t.name
    assert "newsletter serve" in readme
    assert "searched first" in readme and str(builtin_templates()) in readme and "cp " in readme


def test_init_in_a_non_empty_folder_leaves_existing_files_alone(tmp_path):
    (tmp_path / "newsletter.toml").write_text("# mine\n", encoding="utf-8")
    (tmp_path / "subscribers.csv").write_text("email\nme@example.org\n", encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "email.mjml.j2").write_text("mine", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    result = init(tmp_path)
    assert (tmp_path / "newsletter.toml").read_text(encoding="utf-8") == "# mine\n"
    assert (tmp_path / "subscribers.csv").read_text(encoding="utf-8") == "email\nme@example.org\n"
    assert (tmp_path / "templates" / "email.mjml.j2").read_text(encoding="utf-8") == "mine"
    assert f"exists, left alone: {tmp_path / 'newsletter.toml'}" in result.stdout
    assert f"exists, left alone: {tmp_path / 'subscribers.csv'}" in result.stdout
    assert f"created {tmp_path / FILES[1]}" in result.stdout
    assert f"created {tmp_path / 'templates' / 'README.md'}" in result.stdout

    # A second run changes nothing and says so for every file.
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = init(tmp_path)
    assert "created" not in again.stdout
    for rel in FILES:
        assert f"exists, left alone: {tmp_path / rel}" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps


def test_init_into_a_file_is_one_clean_error(tmp_path):
    (tmp_path / "taken").write_text("x")
    result = runner.invoke(app, ["init", str(tmp_path / "taken")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'taken'}: exists but is not a folder "
                                          "(move it away and run init again)"]


def test_then_compose_and_publish_work_in_that_folder(tmp_path):
    d = tmp_path / "news"
    proc = newsletter("init", d, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    issues = sorted((d / "issues").glob("*.yaml"))
    assert len(issues) == 1
    proc = newsletter("compose", *(p.relative_to(d) for p in issues), cwd=d)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stderr == "" and "ERROR" not in proc.stdout
    slug = issues[0].stem
    assert (d / "build" / slug / "email.html").is_file()
    proc = newsletter("publish", cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert (d / "site" / slug / "index.html").is_file()


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_init_modes_are_fixed_whatever_the_umask(tmp_path, umask):
    """Files 0644, folders 0755, and subscribers.csv (it will hold addresses) 0600 (issue 10.2)."""
    import stat

    d = tmp_path / "news"
    old = os.umask(umask)
    try:
        init(d)
    finally:
        os.umask(old)
    for rel in FILES:
        want = 0o600 if rel == "subscribers.csv" else 0o644
        assert stat.S_IMODE((d / rel).stat().st_mode) == want, rel
    for folder in (d, d / "issues", d / "templates"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder


def test_init_never_writes_through_a_planted_link(tmp_path):
    d = tmp_path / "news"
    d.mkdir()
    victim = tmp_path / "victim.txt"
    (d / "newsletter.toml").symlink_to(victim)  # dangling: a plain create would make victim.txt
    (d / "subscribers.csv").symlink_to(tmp_path / "other.csv")
    init(d)
    assert not victim.exists() and not (tmp_path / "other.csv").exists()
    assert (d / "newsletter.toml").is_symlink()


def test_init_shows_the_paths_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = init(tmp_path / "charity")
    assert f"created {tmp_path / 'charity'}\n" in result.stdout
    assert f"created {tmp_path / 'charity' / 'newsletter.toml'}" in result.stdout
