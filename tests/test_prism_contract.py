"""Sanity checks of the SendGrid contract mock (Prism + SendGrid's own OpenAPI spec).

These prove the harness in ``tests/helpers/prism.py`` behaves as the provider
tests expect: valid sends answer 202, spec violations answer 400 with an
``sl-violations`` header, and missing credentials answer 401.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.helpers.prism import prism_server

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
