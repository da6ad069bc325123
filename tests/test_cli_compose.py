"""`newsletter compose`, `newsletter check` and `newsletter schema` from the command line:
through typer's test runner, and as a real subprocess (`python -m newsletter_mailer`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, MINI_ISSUE, ROOT

runner = CliRunner()

GOOD = """\
subject: Hello
date: 2020-09-01
sections:
  - heading: First
    body: Some text.
    image:
      src: https://example.org/a.png
      alt: An image
    links:
      - text: The story
        url: https://example.org/story
"""


def edit(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


@pytest.fixture
def nl(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    return tmp_path


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *words: str, code: int = 2):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    err = result.stderr
    assert "Traceback" not in err and "Traceback" not in result.stdout
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, err)
    return lines[0]


# ------------------------------------------------------------------------------------------------
# compose


def test_compose_writes_files_and_prints_paths_and_checks(nl, tmp_path):
    out = tmp_path / "out"
    result = run("compose", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml", "--out", out)
    assert result.exit_code == 0, result.output
    for name in ("email.html", "email.txt", "web.html", "preview.html"):
        assert (out / name).is_file()
        assert f"wrote {out / name}" in result.stdout
    assert "HTML size" in result.stdout and "unsubscribe link present" in result.stdout
    assert "postal address present" in result.stdout
    assert result.stderr == ""
    html = (out / "email.html").read_text(encoding="utf-8")
    assert "{{ unsubscribe_url }}" in html and "{{ name | default(&quot;friend&quot;) }}" in html
    assert (out / "email.txt").read_text(encoding="utf-8").startswith("CSCP Newsletter - 1 September 2020")
    assert "{{" not in (out / "web.html").read_text(encoding="utf-8")


def test_compose_default_out_is_build_slug_and_config_found_in_cwd(nl, monkeypatch):
    monkeypatch.chdir(nl)
    result = run("compose", "issues/mini.yaml")
    assert result.exit_code == 0, result.output
    for name in ("email.html", "email.txt", "web.html", "preview.html"):
        assert (nl / "build" / "mini" / name).is_file()
    assert f"wrote {Path('build') / 'mini' / 'email.html'}" in result.stdout


def test_compose_example_issue(tmp_path):
    result = run("compose", EXAMPLE_ISSUE, "--config", EXAMPLE_SETTINGS, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    warned = [ln for ln in result.stdout.splitlines() if "warn" in ln.lower()]
    assert "ERROR" not in result.stdout  # the warnings: its web addresses are on example.org (a placeholder);
    assert len(warned) == 2 and "web_base_url is on example.org, a placeholder domain" in warned[0], warned
    assert "web.base_url is on example.org, a placeholder domain" in warned[1], warned  # token links: no address shown
    assert (tmp_path / "web.html").stat().st_size > 10_000


def test_compose_exits_1_when_a_check_fails_but_still_writes(nl, tmp_path):
    (nl / "templates").mkdir()
    (nl / "templates" / "email.txt.j2").write_text("{{ subject }}\n{{ unsubscribe_url }}\n", encoding="utf-8")
    result = run("compose", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml", "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "ERROR postal address missing" in result.stdout
    assert (tmp_path / "o" / "email.html").is_file()


BAD_ISSUES = [
    ("yaml-syntax", edit("subject: Hello", "subject: [oops"), "issue.yaml:2:",
     "YAML syntax error: expected ',' or ']', but got ':', while parsing a flow sequence that starts on line 1"),
    ("unknown-key", edit("  - heading: First", "  - heding: First"), "issue.yaml:4:", "sections[0].heding"),
    ("wrong-type", edit("subject: Hello", "subject: [a, b]"), "issue.yaml:1:", "subject: should be text"),
    ("impossible-date", edit("date: 2020-09-01", "date: 2020-02-30"), "issue.yaml:2:", "date:"),
    ("bad-url", edit("url: https://example.org/story", "url: javascript:alert(1)"), "issue.yaml:11:",
     "sections[0].links[0].url"),
    ("markdown-bad-url", edit("body: Some text.", "body: '[x](vbscript:y)'"), "issue.yaml:5:", "sections[0].body"),
    ("crlf-subject", edit("subject: Hello", 'subject: "Hello\\r\\nBcc: a@example.org"'), "issue.yaml:1:",
     "subject: must be one line"),
    ("missing-alt", edit("      alt: An image\n", ""), "issue.yaml:7:", "sections[0].image.alt: is required"),
    ("empty-sections", "subject: Hello\ndate: 2020-09-01\nsections: []\n", "issue.yaml:3:",
     "sections: must not be empty"),
    ("duplicate-key", edit("subject: Hello", "subject: Hello\nsubject: Again"), "issue.yaml:2:",
     "key 'subject' is given twice"),
    ("jinja", edit("subject: Hello", "subject: '{% if x %}y{% endif %}'"), "issue.yaml:1:", "only merge fields"),
    ("not-utf8", GOOD.encode("utf-8").replace(b"Some text.", b"Caf\xe9"), "issue.yaml:5:", "is not UTF-8"),
    ("nul-byte", GOOD.replace("First", "Fi\x00rst"), "issue.yaml:4:", "contains a NUL byte"),
    ("top-level-list", "- subject: Hello\n", "issue.yaml:1:", "should be a mapping"),
]


@pytest.mark.parametrize("command", ["compose", "check"])
@pytest.mark.parametrize("text, where, words", [b[1:] for b in BAD_ISSUES], ids=[b[0] for b in BAD_ISSUES])
def test_malformed_issue_is_one_line_exit_2(nl, tmp_path, command, text, where, words):
    path = nl / "issues" / "issue.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    out = tmp_path / "out"
    args = [command, path, "--config", nl / "newsletter.toml"] + (["--out", out] if command == "compose" else [])
    line = assert_one_line_error(run(*args), str(path.parent / where), words)
    assert len(line) < 300
    assert not out.exists()


def test_missing_issue_file(nl):
    assert_one_line_error(run("compose", nl / "issues" / "nope.yaml", "--config", nl / "newsletter.toml"),
                          "nope.yaml: file not found")


@pytest.mark.parametrize("old, new, words", [
    ('name = "CSCP Newsletter"', 'name = "CSCP Newsletter', "TOML syntax error"),
    ('primary_color = "#4a2a7a"', 'primary_colour = "#4a2a7a"', "brand.primary_colour: is not a known key"),
    ('primary_color = "#4a2a7a"', 'primary_color = "purple"', "brand.primary_color"),
    ('from_email = "newsletter@example.org"', 'from_email = "nobody"', "from_email"),
], ids=["toml-syntax", "unknown-key", "bad-colour", "bad-from-email"])
def test_malformed_settings_is_one_line_exit_2(nl, old, new, words):
    toml = nl / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    assert_one_line_error(run("compose", nl / "issues" / "mini.yaml", "--config", toml),
                          f"error: {toml}:", words)


def test_settings_not_found(nl, monkeypatch, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")  # not below nl, whose newsletter.toml would be found
    shutil.copy(nl / "issues" / "mini.yaml", empty / "mini.yaml")
    monkeypatch.chdir(empty)  # no newsletter.toml here, nor next to the issue or above it
    assert_one_line_error(run("compose", "mini.yaml"), "newsletter.toml: settings file not found", "--config")


def test_template_error_is_one_line_naming_the_template(nl, tmp_path):
    (nl / "templates").mkdir()
    user = nl / "templates" / "email.mjml.j2"
    user.write_text("<mjml>\n<mj-body>\n{% if %}\n</mj-body>\n</mjml>\n", encoding="utf-8")
    assert_one_line_error(run("compose", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml",
                              "--out", tmp_path / "o"), f"{user}:3:", "template error")
    user.write_text("<mjml><mj-body><mj-section>\n", encoding="utf-8")
    assert_one_line_error(run("compose", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml",
                              "--out", tmp_path / "o"), str(user), "MJML error")


# ------------------------------------------------------------------------------------------------
# check


def test_check_ok_writes_nothing(nl, monkeypatch):
    monkeypatch.chdir(nl)
    result = run("check", "issues/mini.yaml")
    assert result.exit_code == 0, result.output
    assert "unsubscribe link present" in result.stdout
    assert not (nl / "build").exists()


def test_check_non_zero_on_errors(nl):
    (nl / "templates").mkdir()
    (nl / "templates" / "email.txt.j2").write_text("{{ subject }}\n{{ unsubscribe_url }}\n", encoding="utf-8")
    result = run("check", nl / "issues" / "mini.yaml", "--config", nl / "newsletter.toml")
    assert result.exit_code == 1
    assert "ERROR postal address missing" in result.stdout
    assert result.stderr.strip().endswith("1 check(s) failed")


def test_check_non_zero_on_oversize_issue(nl):
    body = "\n\n".join(["word " * 200] * 120)
    (nl / "issues" / "big.yaml").write_text(
        "subject: Big\ndate: 2020-09-01\nsections:\n  - heading: Long\n    body: |\n"
        + "".join(f"      {l}\n" for l in body.splitlines()), encoding="utf-8")
    result = run("check", nl / "issues" / "big.yaml", "--config", nl / "newsletter.toml")
    assert result.exit_code == 1
    assert "Gmail clips messages over 102 KB" in result.stdout


# ------------------------------------------------------------------------------------------------
# schema


@pytest.fixture(scope="module")
def schema() -> dict:
    result = run("schema")
    assert result.exit_code == 0
    return json.loads(result.stdout)


def test_schema_is_json_schema_of_the_issue(schema):
    assert schema["type"] == "object"
    assert "sections" in schema["properties"]
    assert set(schema["required"]) == {"subject", "date", "sections"}
    assert schema["additionalProperties"] is False
    for name in ("Section", "Image", "Link"):
        assert schema["$defs"][name]["additionalProperties"] is False, name
    assert schema["properties"]["sections"]["minItems"] == 1
    assert set(schema["$defs"]["Image"]["required"]) == {"src", "alt"}
    assert set(schema["$defs"]["Section"]["required"]) == {"heading", "body"}


def test_schema_out_file(tmp_path, schema):
    result = run("schema", "--out", tmp_path / "s.json")
    assert result.exit_code == 0
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == schema


def test_example_validates_against_the_schema(schema):
    jsonschema = pytest.importorskip("jsonschema")
    from newsletter_mailer.sourcefile import YamlDoc

    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    data = YamlDoc(EXAMPLE_ISSUE, EXAMPLE_ISSUE.read_text(encoding="utf-8")).data  # dates stay text
    assert list(validator.iter_errors(data)) == []
    bad = dict(data, sections=[{**{("heding" if k == "heading" else k): v for k, v in data["sections"][0].items()}}])
    messages = [e.message for e in validator.iter_errors(bad)]
    assert any("heding" in m for m in messages), messages
    assert list(validator.iter_errors(dict(data, sections=[])))
    assert list(validator.iter_errors(dict(data, colour="red")))


# ------------------------------------------------------------------------------------------------
# a real process: nothing but one line on stderr


def _subprocess(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("NEWSLETTER_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "newsletter_mailer", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, content, words", [
    ("bad-yaml.yaml", "subject: Hello\ndate: 2020-09-01\nsections:\n  - heading: [x\n", "YAML syntax error"),
    ("typo.yaml", edit("  - heading: First", "  - heding: First"), "sections[0].heding: is not a known key"),
    ("latin1.yaml", GOOD.encode("utf-8").replace(b"Hello", b"H\xe9llo"), "is not UTF-8"),
], ids=["yaml-syntax", "unknown-key", "not-utf8"])
def test_subprocess_bad_file_exit_2_no_traceback(nl, name, content, words):
    path = nl / "issues" / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    proc = _subprocess("compose", path, "--config", nl / "newsletter.toml", "--out", nl / "out", cwd=nl)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}:") and words in lines[0], lines
    assert proc.stdout == ""
    assert not (nl / "out").exists()


def test_subprocess_compose_ok(nl):
    proc = _subprocess("compose", "issues/mini.yaml", cwd=nl)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (nl / "build" / "mini" / "email.html").is_file()
    assert "wrote build/mini/email.html" in proc.stdout
