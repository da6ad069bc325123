"""The documentation is tested like code: the MkDocs site builds with --strict, every command
shown in a ```sh block of docs/ runs, and the README's tour runs end to end as written.

A block that cannot run offline is preceded by `<!-- not run: reason -->`; those are counted
here, so adding one is a decision someone makes in a diff, not a silent gap."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
NOT_RUN = 11  # the `<!-- not run: … -->` blocks in README.md, docs/ and what docs/ includes
WAIT = 60  # seconds a started server gets to answer (a bound, not a measurement)

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
_MARKER = re.compile(r"<!-- not run: (.+?) -->\n\Z")
_SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)
_SECRETS = ("SENDGRID_", "SMTP_", "IMAP_", "NEWSLETTER_", "PG", "FORWARDED_ALLOW_IPS")


@dataclass(frozen=True)
class Block:
    source: str
    line: int
    lang: str
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def _text(path: Path) -> str:
    """A page as MkDocs sees it: pymdownx.snippets' `--8<-- "file"` lines replaced by the file."""
    text = path.read_text(encoding="utf-8")
    return _SNIPPET.sub(lambda m: (ROOT / m.group(1)).read_text(encoding="utf-8"), text)


def blocks(path: Path) -> list[Block]:
    text = _text(path)
    found = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()]
        marker = _MARKER.search(before)
        found.append(Block(str(path.relative_to(ROOT)), before.count("\n") + 1, m.group(1), m.group(2),
                           marker.group(1) if marker else None))
    return found


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def docs_commands() -> list[Block]:
    return [b for p in pages() for b in blocks(p) if b.lang == "sh" and b.not_run is None]


def _env(home: Path) -> dict[str, str]:
    """This environment without secrets or settings of the caller's own, HOME in the sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SECRETS)}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("NO_COLOR", None)
    env["NO_MKDOCS_2_WARNING"] = "1"
    env["COLUMNS"] = "120"
    return env


def _example(sandbox: Path) -> Path:
    """A fresh copy of the repository's example newsletter and of what the docs' commands read."""
    for name in ("issues", "templates", "docs", "benchmarks"):
        shutil.copytree(ROOT / name, sandbox / name, ignore=shutil.ignore_patterns(".node", ".venv*", "__pycache__"))
    for name in ("newsletter.toml", "subscribers.csv.example", "mkdocs.yml"):
        shutil.copy2(ROOT / name, sandbox / name)
    for folder in ("cur", "new", "tmp"):  # the empty bounce Maildir the inbox example reads
        (sandbox / "home" / "Maildir" / folder).mkdir(parents=True)
    return sandbox


# ------------------------------------------------------------------------------------------------
# the site


def test_mkdocs_builds_strict(tmp_path):
    """No broken link or anchor, no page left out of the nav, every included file present."""
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert "WARNING" not in run.stderr, run.stderr[-3000:]


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"\b([\w-]+\.md)\b", nav))
    assert listed == {p.name for p in pages()}


def test_the_readme_is_a_front_door():
    """At most 12 KB, and its links lead to files (and headings) that exist."""
    raw = README.read_bytes()
    assert len(raw) <= 12 * 1024, len(raw)
    text = raw.decode("utf-8")
    links = re.findall(r"\]\(((?!https?:)[^)\s]+)\)", text)
    assert any(link.startswith("docs/images/") for link in links)
    for link in links:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.exists(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
            assert anchor in {slugify(h, "-") for h in headings}, link


def test_the_readme_test_command_is_what_ci_runs():
    command = [b for b in blocks(README) if b.lang == "sh" and "pytest" in b.code]
    assert len(command) == 1
    line = command[0].code.strip()
    assert line.startswith("bash .ci/install-system.sh && pip install -e '.[test]'")
    assert line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_the_blocks_that_are_not_run_are_counted_and_say_why():
    every = [b for p in (README, *pages()) for b in blocks(p)]
    not_run = [b for b in every if b.not_run is not None]
    assert all(b.lang == "sh" for b in not_run), [b.id for b in not_run if b.lang != "sh"]
    assert all(len(b.not_run.split()) >= 3 for b in not_run)
    assert len(not_run) == NOT_RUN, [b.id for b in not_run]
    # Shell commands are ```sh (run here); syntax summaries are ```text (never run).
    assert not [b.id for b in every if b.lang in ("bash", "shell", "console")]
    assert not [b.id for b in every if b.lang == "sh" and re.search(r"\s\[--", b.code)]


@pytest.mark.parametrize("block", docs_commands(), ids=lambda b: b.id)
def test_every_docs_command_runs(block, tmp_path):
    sandbox = _example(tmp_path)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=sandbox, env=_env(sandbox / "home"),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{block.id}\n{block.code}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    assert "Traceback" not in run.stderr


def test_the_docs_show_commands():
    """Guards the runner above against silently finding nothing."""
    assert len(docs_commands()) >= 5


# ------------------------------------------------------------------------------------------------
# the README's tour, as a new editor would type it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def _wait_for(proc: subprocess.Popen, url: str, want: str) -> str:
    """The page at url once it contains `want`, polling until the server answers it."""
    deadline = time.monotonic() + WAIT
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            status, body = _get(url)
            if status == 200 and want in body:
                return body
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never showed {want!r}"
        time.sleep(0.1)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def tour_commands() -> list[str]:
    return [line for b in blocks(README) if b.lang == "sh" and b.not_run is None
            for line in b.code.splitlines() if line.strip()]


def test_the_readme_tour_runs_as_written(tmp_path):
    """init → edit → compose --watch → test-send → send → serve → report, in a fresh folder.
    The two commands that listen get `--port` with a free port (so the test never collides with
    anything on this machine) and are stopped with Ctrl-C, as the tour says; the edit step is
    done the way an editor would, by changing the files."""
    commands = tour_commands()
    assert [c.split()[1] for c in commands if c.startswith("newsletter ")] == [
        "init", "compose", "test-send", "send", "send", "status", "serve", "report"]
    cwd, env = tmp_path, _env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    listened = []
    for command in commands:
        if command.startswith("cd "):
            cwd = cwd / command.split(maxsplit=1)[1]
            # Step 2, "Edit": the name in the settings and the issue's subject.
            _edit(cwd / "newsletter.toml", 'name = "My Newsletter"', 'name = "Parish News"')
            issue = next((cwd / "issues").glob("*-first-issue.yaml"))
            _edit(issue, 'subject: "Welcome to My Newsletter"', 'subject: "Welcome to Parish News"')
            continue
        if "--watch" in command or command == "newsletter serve":
            port = _free_port()
            proc = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=cwd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                url = f"http://127.0.0.1:{port}/"
                if "--watch" in command:
                    assert "Welcome to Parish News" in _wait_for(proc, url, "Parish News")
                    _edit(issue, "Welcome to Parish News", "Hello from Parish News")  # saved while watching
                    _wait_for(proc, url, "Hello from Parish News")
                else:
                    form = _wait_for(proc, url + "subscribe", 'name="email"')
                    assert "Parish News" in form
            finally:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                out, err = proc.communicate(timeout=WAIT)
            assert "Traceback" not in err, err
            listened.append(command)
            continue
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
        assert "Traceback" not in run.stderr
        if command.startswith("newsletter init"):
            assert (tmp_path / "mynews" / "newsletter.toml").is_file()
        if " --dry-run" in command:
            assert "nothing sent" in run.stdout and not (cwd / "outbox" / issue.stem / "reader@example.org.eml").exists()
        if command.startswith("newsletter test-send"):
            assert list((cwd / "outbox" / issue.stem / "test").glob("*.eml"))
        if command.startswith("newsletter status"):
            assert "sent" in run.stdout
    assert len(listened) == 2
    sent = [p for p in (cwd / "outbox" / issue.stem).glob("*.eml")]
    assert len(sent) == 1 and "Subject: Hello from Parish News" in sent[0].read_text(encoding="utf-8")
    assert (cwd / "build" / issue.stem / "report.html").is_file()
    # "Run the send again and nobody is mailed twice."
    again = [c for c in commands if c.endswith("--yes")][0]
    run = subprocess.run(["bash", "-c", again], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert [p for p in (cwd / "outbox" / issue.stem).glob("*.eml")] == sent
