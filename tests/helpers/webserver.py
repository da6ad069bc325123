"""A real uvicorn server running `newsletter_mailer.web:app` in a subprocess, for the web tests.

The app is configured from the environment exactly as a deployment would be
(NEWSLETTER_CONFIG, NEWSLETTER_STATE, NEWSLETTER_OUTBOX, NEWSLETTER_SECRET); everything the
server prints goes to a log file the tests read (no token or address may show up there).
"""

from __future__ import annotations

import email
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import pytest
from newsletter_mailer.state import State

ROOT = Path(__file__).resolve().parents[2]
SECRET = "nyBGLxNdygeKZjesJ_twKBIfmHQP_dEMIBN9sdJAvw4"


@dataclass
class WebServer:
    url: str
    folder: Path
    state: Path
    outbox: Path
    log: Path
    secret: bytes
    list_id: str
    proc: subprocess.Popen

    def mails_to(self, address: str) -> list[email.message.Message]:
        folder = self.outbox / "_confirm"
        found = []
        for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
            msg = email.message_from_bytes(path.read_bytes())
            if msg["To"] == address:
                found.append(msg)
        return found

    def audience(self):

        return State(self.state).audience()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, web_settings: str = "", env_extra: dict[str, str] | None = None,
          edit: Callable[[str], str] | None = None, state: Path | None = None, *, serve: bool = False,
          secret: str | None = SECRET, settings_file: Path | None = None) -> WebServer:
    """The server for a newsletter in `folder` (its state in folder/state, or `state`). env_extra adds
    to its environment (the environment's NEWSLETTER_DATABASE_URL, if set, is the server's too); edit
    changes the example settings' text before `[web]` is added; serve: through `newsletter serve`
    (its server settings) instead of plain uvicorn; secret=None: no NEWSLETTER_SECRET (the state
    folder's); settings_file: that one as it is (no copy)."""
    from newsletter_mailer.settings import load_settings

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    from tests.conftest import without_web

    folder.mkdir(parents=True, exist_ok=True)
    if settings_file is None:
        text = without_web((ROOT / "newsletter.toml").read_text(encoding="utf-8"))
        text = edit(text) if edit else text
        (folder / "newsletter.toml").write_text(text + f'\n[web]\nbase_url = "{url}"\n{web_settings}\n',
                                                encoding="utf-8")
    settings = load_settings(settings_file or folder / "newsletter.toml")[0]
    state, outbox, log = state or folder / "state", folder / "outbox", folder / "server.log"
    config = settings_file or folder / "newsletter.toml"
    env = dict(os.environ, NEWSLETTER_CONFIG=str(config), NEWSLETTER_STATE=str(state),
               NEWSLETTER_OUTBOX=str(outbox), NEWSLETTER_SECRET=secret or "",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {}))
    command = ([sys.executable, "-m", "newsletter_mailer", "serve", "--port", str(port), "--config",
                str(config), "--state", str(state)] if serve else
               [sys.executable, "-m", "uvicorn", "newsletter_mailer.web:app", "--host", "127.0.0.1", "--port",
                str(port), "--no-proxy-headers"])
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    server = WebServer(url, folder, state, outbox, log, (secret or "").encode(), settings.list_id_header, proc)
    wait_ready(server)
    return server


def wait_ready(server: WebServer) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError("the web server stopped:\n" + server.log.read_text(errors="replace"))
        try:
            if httpx.get(server.url + "/style.css", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    stop(server)
    raise RuntimeError("the web server did not start:\n" + server.log.read_text(errors="replace"))


def stop(server: WebServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture
def client(server):
    """An HTTP client of the module's `server` (import this fixture where it is used)."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
