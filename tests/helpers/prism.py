"""Run the Stoplight Prism mock server against SendGrid's own OpenAPI description.

Usage::

    from tests.helpers.prism import prism_server

    with prism_server() as base_url:          # e.g. "http://127.0.0.1:43117"
        client = SendGridAPIClient(api_key="SG.test", host=base_url)
        client.client.mail.send.post(request_body=...)

``prism_server()`` calls ``pytest.skip`` (so use it from a test or a fixture)
when the Prism CLI is not installed; the spec is part of the repository, so a
missing spec is an error, not a skip.

Lookup rules
------------
* Spec folder: ``$NEWSLETTER_SENDGRID_SPEC_DIR`` if set (to try a newer spec), otherwise
  the vendored copy in ``tests/contracts/sendgrid/`` (see its README for the source).
* Prism CLI: ``$PRISM_BIN`` if set, otherwise ``<repo root>/.ci/node_modules/.bin/prism``
  (installed by ``npm ci --prefix .ci``), otherwise ``prism`` on ``PATH``.

Prism ignores the spec's server base path (``/v3``) while the ``sendgrid``
library calls ``/v3/mail/send``, so a copy of the spec with ``/v3`` prefixed to
every key of ``paths`` is written to a temporary directory; the original file
is never modified.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_FILENAME = "oai_v3_stoplight.json"
SPEC_DIR_ENV = "NEWSLETTER_SENDGRID_SPEC_DIR"
VENDORED_SPEC_DIR = REPO_ROOT / "tests" / "contracts" / "sendgrid"
PRISM_BIN_ENV = "PRISM_BIN"
PRISM_VERSION = "5.14.2"
INSTALL_HINT = (
    f"install it with `npm ci --prefix .ci` (or `npm install --prefix .ci "
    f"@stoplight/prism-cli@{PRISM_VERSION}`), or set ${PRISM_BIN_ENV}"
)
API_PREFIX = "/v3"

# Prism 5.14.2 on this spec (2.6 MB, 201 paths) answers after ~1.5-2 s on a
# dev machine; the generous default covers slow CI runners.
DEFAULT_STARTUP_TIMEOUT = 60.0


def find_spec_dir() -> Path:
    """The folder holding SendGrid's spec; raises when it is missing (it ships with the tests)."""
    env = os.environ.get(SPEC_DIR_ENV)
    candidate = Path(env) if env else VENDORED_SPEC_DIR
    if not (candidate / SPEC_FILENAME).is_file():
        raise FileNotFoundError(f"SendGrid OpenAPI spec not found: {candidate / SPEC_FILENAME}"
                                + (f" (${SPEC_DIR_ENV} is set)" if env else ""))
    return candidate


def find_prism() -> str | None:
    """Return the Prism executable to use, or None if not installed."""
    env = os.environ.get(PRISM_BIN_ENV)
    if env:
        return env if Path(env).is_file() and os.access(env, os.X_OK) else None
    local = REPO_ROOT / ".ci" / "node_modules" / ".bin" / "prism"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("prism")


def write_prefixed_spec(spec_file: Path, dest_dir: Path, prefix: str = API_PREFIX) -> Path:
    """Write a copy of ``spec_file`` into ``dest_dir`` with ``prefix`` on every path key."""
    with spec_file.open(encoding="utf-8") as fh:
        spec = json.load(fh)
    spec["paths"] = {
        (key if key.startswith(prefix + "/") else prefix + key): value
        for key, value in spec.get("paths", {}).items()
    }
    out = dest_dir / spec_file.name  # keep the .json extension: Prism sniffs it
    with out.open("w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    """True once an HTTP server answers at ``url`` (any status code counts)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # Prism answers 404 for "/": it is up
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # Prism runs node children: kill the group
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def prism_server(startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> Iterator[str]:
    """Start ``prism mock`` on 127.0.0.1 and yield its base URL.

    Skips (``pytest.skip``) when Prism is not installed; raises ``FileNotFoundError``
    when the spec is missing and ``RuntimeError`` when Prism fails to start in time.
    """
    spec_dir = find_spec_dir()
    prism = find_prism()
    if prism is None:
        if os.environ.get(PRISM_BIN_ENV):
            pytest.skip(f"${PRISM_BIN_ENV}={os.environ[PRISM_BIN_ENV]} is not an executable file")
        pytest.skip(f"Prism CLI (@stoplight/prism-cli) not found; {INSTALL_HINT}")

    with tempfile.TemporaryDirectory(prefix="prism-sendgrid-") as tmp:
        tmp_path = Path(tmp)
        spec_copy = write_prefixed_spec(spec_dir / SPEC_FILENAME, tmp_path)
        log_path = tmp_path / "prism.log"
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [prism, "mock", "-h", "127.0.0.1", "-p", str(port), str(spec_copy)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, killed on exit
            )
        try:
            deadline = time.monotonic() + startup_timeout
            while not _answers(base_url + "/"):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"Prism exited with code {proc.returncode} before answering; "
                        f"log:\n{_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Prism did not answer on {base_url} within {startup_timeout:.0f}s; "
                        f"log:\n{_tail(log_path)}"
                    )
                time.sleep(0.1)
            yield base_url
        finally:
            _stop(proc)
