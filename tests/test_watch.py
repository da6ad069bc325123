"""`newsletter compose ISSUE --watch`: a real HTTP server on 127.0.0.1 that rebuilds on every save,
shows a broken edit on the page, recovers, and makes a real browser reload itself."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import ROOT
from tests.test_publish import png

TIMEOUT = 10.0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def wait_for(fn, what: str, timeout: float = TIMEOUT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out waiting for {what}")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def server(newsletter_dir: Path):
    from newsletter_mailer.watch import PreviewServer

    lines: list[str] = []
    s = PreviewServer(newsletter_dir / "issues" / "mini.yaml", newsletter_dir / "newsletter.toml",
                      newsletter_dir / "out", port=0, poll_interval=0.05, echo=lines.append)
    s.lines = lines
    first = s.start()
    assert first.ok, first.message
    yield s
    s.stop()


def page_with(server, text: str) -> str:
    return wait_for(lambda: (p := get(server.url)[1]) and text in p and p, repr(text))


def test_serves_the_preview_with_the_reload_script_and_writes_the_build(server, newsletter_dir):
    status, page = get(server.url)
    assert status == 200
    assert server.url.startswith("http://127.0.0.1:")
    assert 'id="subject">Hello friend<' in page and 'id="checks"' in page
    assert 'fetch("/__version"' in page and f'const version = "{server.version}"' in page
    assert get(server.url + "__version") == (200, str(server.version))
    assert get(server.url + "nothing-here")[0] == 404
    for name in ("email.html", "email.txt", "web.html", "preview.html"):
        assert (newsletter_dir / "out" / name).is_file()
    assert "__version" not in (newsletter_dir / "out" / "preview.html").read_text(encoding="utf-8")


def test_an_edit_rebuilds_the_page_and_the_build_files(server, newsletter_dir):
    v = server.version
    edit(newsletter_dir / "issues" / "mini.yaml", "A short preview line", "An edited preview line")
    page = page_with(server, "An edited preview line")
    assert f'const version = "{server.version}"' in page and server.version > v
    assert "An edited preview line" in (newsletter_dir / "out" / "email.html").read_text(encoding="utf-8")
    assert any(l.startswith("rebuilt in ") for l in server.lines)


def test_the_terminal_line_counts_warnings_instead_of_saying_checks_ok(server, newsletter_dir):
    edit(newsletter_dir / "issues" / "mini.yaml", "preheader: A short preview line\n", "")
    line = wait_for(lambda: next((l for l in server.lines if l.startswith("rebuilt in ")), None), "a rebuild")
    warnings = [k for k in server.builder.checks if k.level == "warning"]
    assert any(k.field == "preheader" for k in warnings)
    names = ", ".join(dict.fromkeys(k.name for k in warnings))
    assert line.endswith(f": {len(warnings)} warnings ({names})"), line
    assert "checks ok" not in line


def test_a_save_without_a_change_keeps_the_version(server, newsletter_dir):
    v = server.version
    path = newsletter_dir / "issues" / "mini.yaml"
    path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    wait_for(lambda: len(server.lines) >= 1, "a rebuild")
    assert server.version == v


def test_a_broken_edit_shows_the_error_and_a_fix_brings_the_preview_back(server, newsletter_dir):
    path = newsletter_dir / "issues" / "mini.yaml"
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("date: 2020-09-01", "date: [2020-09-01"), encoding="utf-8")
    page = page_with(server, 'id="problem"')
    assert "YAML syntax error" in page and "mini.yaml:" in page
    assert 'fetch("/__version"' in page  # the error page reloads itself too
    assert any(l.startswith("error: ") for l in server.lines)

    path.write_text(good.replace("heading: First", "heding: First"), encoding="utf-8")
    page = page_with(server, "is not a known key")
    assert "sections[0].heding" in page

    path.write_text(good.replace("Hello", "Fixed"), encoding="utf-8")
    page = page_with(server, 'id="subject">Fixed friend<')
    assert 'id="problem"' not in page


def test_settings_and_template_changes_rebuild(server, newsletter_dir):
    edit(newsletter_dir / "newsletter.toml", 'name = "CSCP Newsletter"', 'name = "Renamed Newsletter"')
    page_with(server, "Renamed Newsletter")

    from newsletter_mailer.render import builtin_templates

    (newsletter_dir / "templates").mkdir()
    text = (builtin_templates() / "preview.html.j2").read_text(encoding="utf-8")
    (newsletter_dir / "templates" / "preview.html.j2").write_text(
        text.replace("<h1>", "<h1>My own preview: "), encoding="utf-8")
    page_with(server, "My own preview: ")

    # A broken user template shows the error, whatever the page template is.
    (newsletter_dir / "templates" / "preview.html.j2").write_text("{% if %}", encoding="utf-8")
    page = page_with(server, 'id="problem"')
    assert "template error" in page and "preview.html.j2" in page
    (newsletter_dir / "templates" / "preview.html.j2").unlink()
    page_with(server, 'id="subject">Hello friend<')


def test_local_images_are_served_and_a_missing_one_recovers_when_added(server, newsletter_dir):
    issue = newsletter_dir / "issues" / "mini.yaml"
    edit(issue, "src: https://example.org/a.png", "src: pics/a.png")
    page = page_with(server, 'id="problem"')
    assert "image file not found" in page and "sections[0].image.src" in page
    (newsletter_dir / "issues" / "pics").mkdir()
    (newsletter_dir / "issues" / "pics" / "a.png").write_bytes(png())
    page = page_with(server, 'id="subject"')
    assert "/__media/pics/a.png" in page and "https://example.org/newsletter/mini/pics/a.png" not in page
    with urllib.request.urlopen(server.url + "__media/pics/a.png", timeout=5) as r:
        assert r.headers["Content-Type"] == "image/png" and r.read() == png()
    assert get(server.url + "__media/..%2Fnewsletter.toml")[0] == 404
    # The build files keep the absolute address mail clients need.
    assert "https://example.org/newsletter/mini/pics/a.png" in (newsletter_dir / "out" / "email.html").read_text()


def test_local_images_are_served_when_the_issue_path_is_relative(newsletter_dir, monkeypatch):
    """As the README and init say to run it: `compose issues/x.yaml --watch` from the newsletter's
    folder. The image path must be joined to the issue's folder once, not twice."""
    from newsletter_mailer.watch import PreviewServer

    monkeypatch.chdir(newsletter_dir)
    edit(newsletter_dir / "issues" / "mini.yaml", "src: https://example.org/a.png", "src: pics/a.png")
    (newsletter_dir / "issues" / "pics").mkdir()
    (newsletter_dir / "issues" / "pics" / "a.png").write_bytes(png())
    s = PreviewServer(Path("issues/mini.yaml"), None, None, port=0, poll_interval=0.05, echo=lambda _: None)
    first = s.start()
    try:
        assert first.ok, first.message
        assert "/__media/pics/a.png" in get(s.url)[1]
        with urllib.request.urlopen(s.url + "__media/pics/a.png", timeout=5) as r:
            assert r.status == 200 and r.read() == png()
    finally:
        s.stop()


def test_a_real_browser_reloads_itself_after_an_edit(server, newsletter_dir):
    from tests.helpers.browser import open_page

    with open_page(server.url, 1000) as page:
        assert page.locator("#subject").inner_text() == "Hello friend"
        edit(newsletter_dir / "issues" / "mini.yaml", "subject: 'Hello", "subject: 'Reloaded")
        page.wait_for_function("() => document.querySelector('#subject')?.textContent === 'Reloaded friend'",
                               timeout=TIMEOUT * 1000)
        frame = page.frame_locator("#desktop")
        assert "Reloaded friend" not in frame.locator("body").inner_text()  # the subject is not in the body
        assert "First" in frame.locator("body").inner_text()


# ------------------------------------------------------------------------------------------------
# the command line


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NEWSLETTER_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_watch_on_a_free_port_then_ctrl_c_stops_cleanly(newsletter_dir):
    proc = subprocess.Popen([sys.executable, "-m", "newsletter_mailer", "compose", "issues/mini.yaml",
                             "--watch", "--port", "0"], cwd=newsletter_dir, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        m = re.search(r"at (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\)", first)
        assert m and m.group(2) != "0", first
        url = m.group(1)
        assert proc.stdout.readline().startswith("rebuilt in ")
        status, page = get(url)
        assert status == 200 and 'id="subject">Hello friend<' in page
        assert (newsletter_dir / "build" / "mini" / "preview.html").is_file()
        edit(newsletter_dir / "issues" / "mini.yaml", "subject: 'Hello", "subject: 'Changed")
        page_with(type("S", (), {"url": url}), 'id="subject">Changed friend<')
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, (out, err)
    assert out.rstrip().endswith("stopped") and "Traceback" not in err and err == ""


def test_cli_watch_on_a_busy_port_is_one_clean_error(newsletter_dir, monkeypatch):
    monkeypatch.chdir(newsletter_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["compose", "issues/mini.yaml", "--watch", "--port", str(port)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (pass --port N, or --port 0 for a free one)"]


def test_cli_watch_of_a_missing_issue_is_one_clean_error(newsletter_dir, monkeypatch):
    monkeypatch.chdir(newsletter_dir)
    result = CliRunner().invoke(app, ["compose", "issues/nope.yaml", "--watch", "--port", "0"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: issues/nope.yaml: file not found (check the path)"]


def raw_get(server, host: str | None, path: str = "/") -> tuple[int, bytes]:
    """A real request with the Host header a DNS-rebinding page would send (or none at all)."""
    import http.client

    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost:1", "localhost", "", None])
@pytest.mark.parametrize("path", ["/", "/__version", "/__media/pics/a.png"])
def test_a_foreign_host_header_gets_421_and_no_content(server, host, path):
    """DNS rebinding: a site whose name now points at 127.0.0.1 must not read the preview."""
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    status, body = raw_get(server, host.format(port=port) if host is not None else None, path)
    assert status == 421 and body == b""


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LocalHost", "[::1]"])
def test_the_loopback_names_it_serves_are_accepted(server, name):
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    status, body = raw_get(server, f"{name}:{port}")
    assert status == 200 and b'id="subject">Hello friend<' in body


SECRET = b"secret outside the issue folder\n"


@pytest.mark.parametrize("kind", ["linked file", "under a linked folder", "swapped after serving"])
def test_media_route_serves_nothing_from_outside_the_issue_folder(server, newsletter_dir, kind):
    """A symlinked image, one under a symlinked folder, or one swapped for a link once served:
    /__media/ answers 404 and never the outside file's bytes (issue 10.3)."""
    outside = newsletter_dir / "outside"  # next to issues/, so outside the issue's folder tree
    outside.mkdir()
    (outside / "a.png").write_bytes(SECRET)
    pics = newsletter_dir / "issues" / "pics"
    if kind == "under a linked folder":
        pics.symlink_to(outside, target_is_directory=True)
    else:
        pics.mkdir()
        if kind == "swapped after serving":
            (pics / "a.png").write_bytes(png())
        else:
            (pics / "a.png").symlink_to(outside / "a.png")
    edit(newsletter_dir / "issues" / "mini.yaml", "src: https://example.org/a.png", "src: pics/a.png")
    if kind == "swapped after serving":
        page_with(server, "/__media/pics/a.png")
        with urllib.request.urlopen(server.url + "__media/pics/a.png", timeout=5) as r:
            assert r.read() == png()
        (pics / "a.png").unlink()
        (pics / "a.png").symlink_to(outside / "a.png")
    else:
        page = page_with(server, 'id="problem"')
        assert "the image leads outside" in page and "sections[0].image.src" in page
    status, body = get(server.url + "__media/pics/a.png")
    assert status == 404 and SECRET.decode() not in body


@pytest.mark.parametrize("url", ["__media/../newsletter.toml", "__media/..%2F..%2Foutside%2Fa.png",
                                 "__media/%2Fetc%2Fpasswd", "__media//etc/passwd"])
def test_media_route_refuses_escaping_and_absolute_paths(server, newsletter_dir, url):
    (newsletter_dir / "outside").mkdir()
    (newsletter_dir / "outside" / "a.png").write_bytes(SECRET)
    status, body = get(server.url + url)
    assert status == 404 and "secret" not in body and "from_email" not in body
