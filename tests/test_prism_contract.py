"""Sanity checks of the SendGrid contract mock (Prism + SendGrid's own OpenAPI spec).

These prove the harness in ``tests/helpers/prism.py`` behaves as the provider
tests expect: valid sends answer 202, spec violations answer 400 with an
``sl-violations`` header, and missing credentials answer 401.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

from tests.helpers.prism import REPO_ROOT, SPEC_DIR_ENV, SPEC_FILENAME, find_spec_dir, prism_server

sendgrid = pytest.importorskip("sendgrid")
from python_http_client.exceptions import BadRequestsError  # noqa: E402  (sendgrid dependency)

VALID_BODY = {
    "personalizations": [{"to": [{"email": "reader@example.com"}]}],
    "from": {"email": "news@example.com", "name": "Newsletter"},
    "subject": "Hello",
    "content": [
        {"type": "text/plain", "value": "Hello, reader."},
        {"type": "text/html", "value": "<p>Hello, reader.</p>"},
    ],
}


SPEC_SHA256 = "b97d02f53e11697e6eab40e8936f2d0744c2c5ca4ac60d4f930707f5ba599ff1"


def test_spec_is_vendored_with_its_licence(monkeypatch):
    """A fresh clone has the spec: it lives in the repository, unchanged, with its MIT licence."""
    monkeypatch.delenv(SPEC_DIR_ENV, raising=False)
    spec_dir = find_spec_dir()
    assert spec_dir.resolve().is_relative_to(REPO_ROOT.resolve())
    assert hashlib.sha256((spec_dir / SPEC_FILENAME).read_bytes()).hexdigest() == SPEC_SHA256
    assert "MIT License" in (spec_dir / "LICENSE-sendgrid-oai").read_text(encoding="utf-8")


def test_a_missing_spec_is_an_error_not_a_skip(monkeypatch, tmp_path):
    monkeypatch.setenv(SPEC_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=SPEC_FILENAME):
        find_spec_dir()


@pytest.fixture(scope="module")
def prism_url():
    with prism_server() as url:
        yield url


@pytest.fixture
def client(prism_url):
    return sendgrid.SendGridAPIClient(api_key="SG.test", host=prism_url)


def test_valid_send_is_accepted(client):
    response = client.client.mail.send.post(request_body=VALID_BODY)
    assert response.status_code == 202


def test_bad_email_is_rejected_with_violations(client):
    body = json.loads(json.dumps(VALID_BODY))
    body["personalizations"][0]["to"][0]["email"] = "not-an-email"
    with pytest.raises(BadRequestsError) as excinfo:
        client.client.mail.send.post(request_body=body)
    err = excinfo.value
    assert err.status_code == 400
    violations = err.headers.get("sl-violations")
    assert violations, f"no sl-violations header in {dict(err.headers)}"
    assert "email" in violations


def test_missing_authorization_is_unauthorized(prism_url):
    # The sendgrid client always sends Authorization, so use a bare request.
    request = urllib.request.Request(
        prism_url + "/v3/mail/send",
        data=json.dumps(VALID_BODY).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)
    assert excinfo.value.code == 401
