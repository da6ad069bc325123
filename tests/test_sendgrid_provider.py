"""The SendGrid provider against SendGrid's own contract (Prism) and a scripted local server.

Prism validates every request against SendGrid's OpenAPI description (a 400 lists the
violations in `sl-violations`); it cannot answer 429 or 5xx, hang or refuse, so a small
http.server of the test's own plays those parts and records what it was sent.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import pytest

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.providers.base import Recipient
from newsletter_mailer.send import own_unsubscribe, send_context
from tests.helpers.prism import prism_server

pytest.importorskip("sendgrid")

from newsletter_mailer.providers.sendgrid import ASM_UNSUBSCRIBE_TAG, SendGridProvider  # noqa: E402

KEY = "SG.planted-key-xyz"
UNSUB = "https://example.org/unsubscribe?email=x&token=t"
TIMEOUT = 0.5


# --- helpers --------------------------------------------------------------------------------

def with_sendgrid(composed, **sg):
    """The composed issue with delivery.sendgrid settings changed (timeout small by default)."""
    sg.setdefault("timeout", TIMEOUT)
    s = composed.settings
    new_sg = type(s.delivery.sendgrid).model_validate({**s.delivery.sendgrid.model_dump(), **sg})
    new_s = s.model_copy(update={"delivery": s.delivery.model_copy(update={"sendgrid": new_sg})})
    return dataclasses.replace(composed, settings=new_s)


def make_provider(composed, newsletter_dir, host, *, key=KEY, prefix="", sleep=time.sleep, **sg) -> SendGridProvider:
    c = with_sendgrid(composed, **sg)
    env = {"NEWSLETTER_BACKOFF_BASE": "0.01"}
    if key is not None:
        env["SENDGRID_API_KEY"] = key
    if host is not None:
        env["SENDGRID_API_HOST"] = host
    return SendGridProvider(send_context(c, subject_prefix=prefix, env=env), sleep=sleep)


def recipients(composed, n, *, name="Ann", unsub=UNSUB, start=0):
    filler = composed.filler()
    out = []
    for i in range(start, start + n):
        email = f"reader{i}@example.org"
        out.append(Recipient(email, name, filler.values(email, name, {}, unsub)))
    return out


class Response(NamedTuple):
    status_code: int
    headers: dict
    body: object


class Recorder:
    """Wraps the provider's transport: keeps each body posted and each response."""

    def __init__(self, provider):
        self.bodies: list[dict] = []
        self.responses = []
        provider.open()
        inner = provider.transport

        def post(body):
            self.bodies.append(json.loads(json.dumps(body)))
            response = inner(body)
            self.responses.append(Response(*response))
            return response

        provider.transport = post


def assert_not_leaked(capsys, caplog, *texts):
    out = capsys.readouterr()
    for where, text in [("stdout", out.out), ("stderr", out.err), ("log", caplog.text),
                        *(("text", t) for t in texts)]:
        assert KEY not in text, f"API key leaked in {where}"
        assert "planted-key" not in text, f"API key leaked in {where}"


def exc_texts(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc), "".join(traceback.format_exception(exc))]


# --- Prism: SendGrid's own contract -------------------------------------------------------

@pytest.fixture(scope="module")
def prism_url():
    with prism_server() as url:
        yield url


def test_three_recipients_accepted_by_contract(prism_url, composed, newsletter_dir):
    provider = make_provider(composed, newsletter_dir, prism_url)
    rec = Recorder(provider)
    provider.open()
    results = provider.send(recipients(composed, 3))
    provider.close()
    assert [r.ok for r in results] == [True] * 3
    assert [r.email for r in results] == [f"reader{i}@example.org" for i in range(3)]
    assert len(rec.bodies) == 1 and len(rec.bodies[0]["personalizations"]) == 3
    assert rec.responses[0].status_code == 202
    assert not rec.responses[0].headers.get("sl-violations")


def test_payload_shape_for_composed_issue(prism_url, composed, newsletter_dir):
    provider = make_provider(composed, newsletter_dir, prism_url, categories=["newsletter", "mini"])
    body, results = provider.payload(recipients(composed, 2, name="") + recipients(composed, 1, start=5))
    assert results == [None, None, None]
    assert body["from"] == {"email": "newsletter@example.org", "name": "Cumbria Safeguarding Children Partnership"}
    assert body["reply_to"] == {"email": "cscp@example.org"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["categories"] == ["mini", "newsletter"]          # slug first, unique
    assert "custom_args" not in body                               # see test_message_level_custom_args_is_a_string
    assert body["headers"]["List-Id"] == composed.settings.list_id_header
    assert body["tracking_settings"] == {"click_tracking": {"enable": False, "enable_text": False},
                                         "open_tracking": {"enable": False}}
    assert "asm" not in body
    p0, _, p2 = body["personalizations"]
    assert p0["to"] == [{"email": "reader0@example.org"}]           # empty name left out
    assert p2["to"] == [{"email": "reader5@example.org", "name": "Ann"}]
    assert p2["subject"] == "Hello Ann"
    assert p2["custom_args"] == {"issue": "mini"}
    assert p2["headers"] == {
        "List-Unsubscribe": f"<{UNSUB}>, <mailto:unsubscribe@example.org?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    # keys only for the slots each part uses; every key present in its part
    text, htm = body["content"][0]["value"], body["content"][1]["value"]
    for key in p2["substitutions"]:
        assert key in (htm if key.endswith("h-") else text)
    # and the contract accepts it as is
    provider.open()
    response = Response(*provider.transport(body))
    assert response.status_code == 202
    assert not response.headers.get("sl-violations")


def test_asm_group_and_tracking_validate(prism_url, composed, newsletter_dir):
    provider = make_provider(composed, newsletter_dir, prism_url, asm_group_id=4242,
                             tracking={"click": True, "open": True}, categories=["a", "b"])
    assert own_unsubscribe(provider.ctx.settings, provider.name) == ASM_UNSUBSCRIBE_TAG
    rec = Recorder(provider)
    results = provider.send(recipients(composed, 2, unsub=ASM_UNSUBSCRIBE_TAG))
    assert all(r.ok for r in results)
    body = rec.bodies[0]
    assert body["asm"] == {"group_id": 4242}
    assert body["tracking_settings"]["click_tracking"] == {"enable": True, "enable_text": True}
    assert body["tracking_settings"]["open_tracking"] == {"enable": True}
    for p in body["personalizations"]:
        assert "headers" not in p                # SendGrid adds its own List-Unsubscribe
        assert ASM_UNSUBSCRIBE_TAG not in json.dumps(p["substitutions"])
    htm = body["content"][1]["value"]
    assert ASM_UNSUBSCRIBE_TAG in htm            # written literally, never HTML-escaped
    assert html.escape(ASM_UNSUBSCRIBE_TAG) not in htm
    assert not rec.responses[0].headers.get("sl-violations")


def test_no_asm_group_uses_settings_link(composed, newsletter_dir):
    provider = make_provider(composed, newsletter_dir, None)
    assert own_unsubscribe(provider.ctx.settings, provider.name) is None


def test_batch_size_is_the_contract_limit(prism_url, composed, newsletter_dir):
    provider = make_provider(composed, newsletter_dir, prism_url)
    assert provider.batch_size == 1000
    rec = Recorder(provider)
    results = provider.send(recipients(composed, 1000))
    assert all(r.ok for r in results) and len(results) == 1000
    assert [len(b["personalizations"]) for b in rec.bodies] == [1000]
    assert not rec.responses[0].headers.get("sl-violations")

    # one more would break the contract: the provider refuses to post it ...
    with pytest.raises(ValueError, match="at most 1000"):
        provider.send(recipients(composed, 1001))
    assert len(rec.bodies) == 1
    # ... and SendGrid's contract indeed rejects it
    body, _ = provider.payload(recipients(composed, 1001))
    with pytest.raises(NewsletterError, match="more than 1000 items"):
        provider._deliver(body)


def test_message_level_custom_args_is_a_string_in_the_contract(prism_url, composed, newsletter_dir):
    """Why the issue rides in each personalization's custom_args, not the message's."""
    provider = make_provider(composed, newsletter_dir, prism_url)
    provider.open()
    body, _ = provider.payload(recipients(composed, 1))
    status, headers, _ = provider.transport({**body, "custom_args": {"issue": "mini"}})
    assert status == 400  # python_http_client's BadRequestsError
    assert "custom_args must be string" in headers["sl-violations"]


def test_missing_key(composed, newsletter_dir, capsys, caplog):
    provider = make_provider(composed, newsletter_dir, "http://127.0.0.1:9", key=None)
    with pytest.raises(NewsletterError, match="SENDGRID_API_KEY is not set") as excinfo:
        provider.open()
    assert "Mail Send permission" in str(excinfo.value)
    with pytest.raises(NewsletterError):
        provider.send(recipients(composed, 1))


def test_no_authorization_is_refused_by_contract(prism_url, composed, newsletter_dir, capsys, caplog):
    provider = make_provider(composed, newsletter_dir, prism_url)
    provider.open()
    del provider.transport.client.client.request_headers["Authorization"]
    with pytest.raises(NewsletterError, match=r"refused the API key \(401\)") as excinfo:
        provider.send(recipients(composed, 1))
    assert_not_leaked(capsys, caplog, *exc_texts(excinfo.value))


def test_substitution_values_are_data(prism_url, composed, newsletter_dir):
    name = "{{ 7*7 }} <b>"
    provider = make_provider(composed, newsletter_dir, prism_url)
    rec = Recorder(provider)
    [result] = provider.send(recipients(composed, 1, name=name))
    assert result.ok
    body = rec.bodies[0]
    text, htm = body["content"][0]["value"], body["content"][1]["value"]
    name_slots = {i for i, f in enumerate(composed.fields) if f.name == "name"}
    subs = body["personalizations"][0]["substitutions"]
    html_keys = [provider.html_keys[i] for i in name_slots if i in provider.html_keys]
    text_keys = [provider.text_keys[i] for i in name_slots if i in provider.text_keys]
    assert html_keys and text_keys
    for k in html_keys:
        assert subs[k] == "{{ 7*7 }} &lt;b&gt;"
    for k in text_keys:
        assert subs[k] == name
    assert name in subs.values() and "49" not in subs.values()
    assert body["personalizations"][0]["subject"] == "Hello " + name
    token_re = re.compile(r"mf[a-y]{6}\d+z")
    assert not token_re.search(htm) and not token_re.search(text)
    assert "{{" not in htm and "{{" not in text
    assert "<b>" not in htm


# --- a scripted server of the test's own ----------------------------------------------------

class Scripted:
    """http.server on 127.0.0.1 answering scripted responses and recording requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(body) if body else None})
                step = outer.script.pop(0) if outer.script else {}
                if step.get("delay"):
                    time.sleep(step["delay"])
                status = step.get("status", 202)
                payload = step.get("body")
                data = json.dumps(payload).encode() if payload is not None else b""
                try:
                    self.send_response(status)
                    headers = {"X-Message-Id": f"msg-{len(outer.requests)}"} if status == 202 else {}
                    headers.update(step.get("headers", {}))
                    for k, v in headers.items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(data)))
                    if data:
                        self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def provider(server, composed, newsletter_dir, sleeps, caplog):
    caplog.set_level(logging.DEBUG)  # python_http_client logs request headers at DEBUG
    p = make_provider(composed, newsletter_dir, server.url, sleep=sleeps.append)
    p.open()
    return p


def test_accepted_uses_key_and_message_id(provider, server, composed, capsys, caplog):
    results = provider.send(recipients(composed, 2))
    assert [(r.ok, r.message_id) for r in results] == [(True, "msg-1"), (True, "msg-1")]
    [req] = server.requests
    assert req["path"] == "/v3/mail/send"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    headers_logs = [r.getMessage() for r in caplog.records if "HEADERS" in r.getMessage()]
    assert headers_logs and all("Bearer [redacted]" in m for m in headers_logs)
    assert_not_leaked(capsys, caplog)


def test_rate_limited_waits_until_reset(provider, server, composed, sleeps, capsys, caplog):
    reset = int(time.time()) + 30
    server.script = [{"status": 429, "headers": {"X-RateLimit-Reset": reset}, "body": {"errors": []}}]
    results = provider.send(recipients(composed, 3))
    assert all(r.ok for r in results)
    assert len(server.requests) == 2 and [r["body"] for r in server.requests][0] == server.requests[1]["body"]
    assert len(sleeps) == 1 and 28 <= sleeps[0] <= 30
    assert_not_leaked(capsys, caplog)


def test_rate_limit_wait_is_capped_and_backs_off_without_reset(provider, server, composed, sleeps):
    server.script = [{"status": 429, "headers": {"X-RateLimit-Reset": int(time.time()) + 3600}},
                     {"status": 429}, {"status": 429}]
    assert all(r.ok for r in provider.send(recipients(composed, 1)))
    assert len(server.requests) == 4
    assert sleeps[0] == 60.0
    assert sleeps[1:] == pytest.approx([0.02, 0.04])   # base 0.01, doubling with each try


@pytest.mark.parametrize("statuses", [[500], [503], [500, 503]])
def test_server_errors_retried(provider, server, composed, sleeps, statuses, capsys, caplog):
    server.script = [{"status": s, "body": {"errors": [{"message": "oops"}]}} for s in statuses]
    results = provider.send(recipients(composed, 2))
    assert all(r.ok for r in results)
    assert results[0].message_id == f"msg-{len(statuses) + 1}"
    assert len(server.requests) == len(statuses) + 1
    assert sleeps == pytest.approx([0.01 * 2 ** i for i in range(len(statuses))])
    assert_not_leaked(capsys, caplog)


def test_server_errors_exhausted_fail_temporarily(provider, server, composed, sleeps):
    server.script = [{"status": 503}] * 6
    results = provider.send(recipients(composed, 2))
    assert len(server.requests) == 5 and len(sleeps) == 4
    assert all(not r.ok and not r.permanent and not r.uncertain for r in results)
    assert "503" in results[0].error


def test_connection_refused_retried_then_temporary(composed, newsletter_dir, sleeps, capsys, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    p = make_provider(composed, newsletter_dir, f"http://127.0.0.1:{port}", sleep=sleeps.append)
    results = p.send(recipients(composed, 2))
    assert len(sleeps) == 4
    assert all(not r.ok and not r.permanent and not r.uncertain for r in results)
    assert "cannot reach SendGrid" in results[0].error
    assert_not_leaked(capsys, caplog, results[0].error)


def test_no_answer_is_uncertain_and_not_retried(provider, server, composed, sleeps, capsys, caplog):
    server.script = [{"delay": TIMEOUT + 1.0}]
    t0 = time.monotonic()
    results = provider.send(recipients(composed, 3))
    elapsed = time.monotonic() - t0
    assert all(r.uncertain and not r.ok and not r.permanent for r in results)
    assert "may have been accepted" in results[0].error
    assert len(server.requests) == 1 and sleeps == []
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 1.0
    assert_not_leaked(capsys, caplog, results[0].error)


@pytest.mark.parametrize("status, body, expected", [
    (400, {"errors": [{"message": "The from address does not match a verified Sender Identity.",
                       "field": "from.email", "help": None}]},
     r"rejected the request \(400\): The from address does not match a verified Sender Identity\. "
     r"\(field from\.email\)"),
    (401, {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                       "field": None}]},
     r"SendGrid refused the API key \(401\).*check SENDGRID_API_KEY"),
    (403, {"errors": [{"message": "access forbidden"}]},
     r"SendGrid refused the API key \(403\): access forbidden"),
    (413, {"errors": [{"message": "payload too large"}]}, r"request too large"),
])
def test_refusals_stop_the_send(provider, server, composed, sleeps, status, body, expected, capsys, caplog):
    server.script = [{"status": status, "body": body}]
    with pytest.raises(NewsletterError, match=expected) as excinfo:
        provider.send(recipients(composed, 2))
    assert len(server.requests) == 1 and sleeps == []
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert_not_leaked(capsys, caplog, *exc_texts(excinfo.value))


def test_unsafe_or_oversized_recipients_fail_alone(provider, server, composed):
    batch = recipients(composed, 3)
    batch[0] = Recipient("a@example.org", "Eve\r\nBcc: x@example.org",
                         composed.filler().values("a@example.org", "Eve\r\nBcc: x@example.org", {}, UNSUB))
    big = "x" * 6000
    batch[2] = Recipient("c@example.org", big, composed.filler().values("c@example.org", big, {}, UNSUB))
    results = provider.send(batch)
    assert [r.ok for r in results] == [False, True, False]
    assert results[0].permanent and "line break" in results[0].error
    assert results[2].permanent and "10,000" in results[2].error
    [req] = server.requests
    assert [p["to"][0]["email"] for p in req["body"]["personalizations"]] == ["reader1@example.org"]


def test_all_recipients_refused_makes_no_request(provider, server, composed):
    big = "x" * 6000
    batch = [Recipient("c@example.org", big, composed.filler().values("c@example.org", big, {}, UNSUB))]
    [result] = provider.send(batch)
    assert result.permanent and server.requests == []


def test_subject_prefix(provider, server, composed, newsletter_dir):
    p = make_provider(composed, newsletter_dir, server.url, prefix="[TEST] ")
    p.send(recipients(composed, 1))
    assert server.requests[0]["body"]["personalizations"][0]["subject"] == "[TEST] Hello Ann"


def test_plain_http_only_for_local_hosts(composed, newsletter_dir):
    p = make_provider(composed, newsletter_dir, "http://api.sendgrid.com")
    with pytest.raises(NewsletterError, match="plain http"):
        p.open()
    p = make_provider(composed, newsletter_dir, None)
    p.open()
    assert p.transport.client.host == "https://api.sendgrid.com"
    assert p.transport.client.client.timeout == TIMEOUT


def test_a_subject_test_variant_rides_in_custom_args_and_counts_toward_the_size(provider, composed):
    """The webhook's events carry custom_args back: a sampled reader's "ab" is there, and in the 10,000-byte check."""
    [plain] = recipients(composed, 1)
    tested = dataclasses.replace(plain, ab="B")
    assert provider.personalization(plain)["custom_args"] == {"issue": composed.slug}
    assert provider.personalization(tested)["custom_args"] == {"issue": composed.slug, "ab": "B"}
    big = "x" * 6000
    sizes = []
    for ab in (None, "B"):
        r = Recipient("c@example.org", big, composed.filler().values("c@example.org", big, {}, UNSUB), ab=ab)
        refused = provider.personalization(r)
        assert isinstance(refused, str) and "limit 10,000" in refused
        sizes.append(int(re.search(r"([\d,]+) bytes", refused).group(1).replace(",", "")))
    assert sizes[1] - sizes[0] == len("ab") + len("B")
