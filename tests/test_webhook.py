"""SendGrid's signed Event Webhook (`POST /hooks/sendgrid`) against the real uvicorn server, with
signatures made by a test key: only SendGrid's own, fresh, untampered batches are recorded."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from newsletter_mailer.audience import sendgrid_store
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.web.application import create_app
from newsletter_mailer.web.webhook import KEY_VAR, SIGNATURE, TIMESTAMP
from tests.helpers.webserver import ROOT, client, start, stop  # noqa: F401 (client: a fixture)

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
PATH = "/hooks/sendgrid"


def public_b64(private) -> str:
    """The key as SendGrid's settings page shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def signed(body: bytes, stamp: str | None = None, key=KEY) -> dict[str, str]:
    stamp = stamp or str(int(time.time()))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: stamp, "Content-Type": "application/json"}


def batch(*events: dict) -> bytes:
    return json.dumps([{"sg_event_id": uuid.uuid4().hex, "timestamp": int(time.time()), **e} for e in events]).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    os.environ[KEY_VAR] = public_b64(KEY)
    try:
        s = start(tmp_path_factory.mktemp("hook"))
    finally:
        del os.environ[KEY_VAR]
    yield s
    stop(s)




@pytest.fixture
def store(server):
    s = server.audience()
    yield s
    s.close()


def fresh(slug: str = "") -> str:
    return f"reader-{uuid.uuid4().hex[:10]}{slug}@example.org"


def test_a_signed_batch_is_recorded_and_counted_per_issue(client, store, server):
    gone, angry, left, grouped, blocked, dropped = (fresh() for _ in range(6))
    issue = f"issue-{uuid.uuid4().hex[:6]}"
    body = batch({"event": "bounce", "type": "bounce", "email": gone, "issue": issue, "status": "5.1.1",
                  "reason": "550 5.1.1 no such user"},
                 {"event": "spamreport", "email": angry, "issue": issue},
                 {"event": "unsubscribe", "email": left, "issue": issue},
                 {"event": "group_unsubscribe", "email": grouped, "issue": issue, "asm_group_id": 7},
                 {"event": "bounce", "type": "blocked", "email": blocked, "issue": issue, "status": "4.0.0",
                  "reason": "IP blocklisted"},
                 {"event": "dropped", "email": dropped, "issue": issue, "reason": "Bounced Address"},
                 {"event": "delivered", "email": fresh(), "issue": issue},
                 {"event": "delivered", "email": fresh(), "issue": issue},
                 {"event": "open", "email": fresh(), "issue": issue},
                 {"event": "click", "email": fresh(), "issue": issue, "url": "https://example.org/story"},
                 {"event": "click", "email": fresh(), "issue": issue, "url": "https://example.org/story"})
    answer = client.post(PATH, content=body, headers=signed(body))
    assert answer.status_code == 204 and answer.content == b""
    assert {e: store.status(e).status for e in (gone, angry, left, grouped, dropped)} == {
        gone: "bounced", angry: "complained", left: "unsubscribed", grouped: "unsubscribed", dropped: "bounced"}
    assert store.status(gone).issue == issue and "5.1.1" in store.status(gone).reason
    assert store.status(gone).source == "sendgrid"
    assert store.status(blocked) is None  # recorded, not suppressed
    assert sendgrid_store.blocks(store, blocked)[0][1:] == ("4.0.0", "SendGrid bounce: 4.0.0 IP blocklisted")
    assert sendgrid_store.counts(store, issue) == {"bounce": 2, "spamreport": 1, "unsubscribe": 1,
                                                   "group_unsubscribe": 1, "dropped": 1, "delivered": 2,
                                                   "open": 1, "click": 2}
    assert sendgrid_store.clicks(store, issue) == [("https://example.org/story", 2)]
    assert gone not in server.log.read_text() and issue not in server.log.read_text()


def test_the_same_event_twice_counts_once(client, store):
    issue, who = f"issue-{uuid.uuid4().hex[:6]}", fresh()
    body = batch({"event": "delivered", "email": who, "issue": issue},
                 {"event": "spamreport", "email": who, "issue": issue})
    for _ in range(2):  # SendGrid retrying the batch
        assert client.post(PATH, content=body, headers=signed(body)).status_code == 204
    assert sendgrid_store.counts(store, issue) == {"delivered": 1, "spamreport": 1}
    assert len(store.history(who)) == 1


def refusals():
    body = batch({"event": "bounce", "type": "bounce", "email": "victim@example.org", "issue": "forged"})
    now = int(time.time())
    good = signed(body)
    yield "wrong key", body, signed(body, key=OTHER), 403
    yield "tampered body", body.replace(b"victim", b"victin"), good, 403
    yield "tampered timestamp", body, {**good, TIMESTAMP: str(now + 1)}, 403
    yield "stale", body, signed(body, str(now - 601)), 403
    yield "from the future", body, signed(body, str(now + 3600)), 403
    yield "no signature", body, {TIMESTAMP: good[TIMESTAMP]}, 401
    yield "no timestamp", body, {SIGNATURE: good[SIGNATURE]}, 401
    yield "no headers", body, {}, 401
    yield "garbage signature", body, {**good, SIGNATURE: "not base64 at all!"}, 400
    yield "garbage DER", body, {**good, SIGNATURE: base64.b64encode(b"\x30\x02\x01").decode()}, 403
    yield "malformed timestamp", body, {**good, TIMESTAMP: "12:00"}, 400


@pytest.mark.parametrize("why, body, headers, status", list(refusals()), ids=[r[0] for r in refusals()])
def test_anything_not_signed_by_sendgrid_now_is_refused_and_records_nothing(client, store, server, why, body,
                                                                             headers, status):
    answer = client.post(PATH, content=body, headers=headers)
    assert answer.status_code == status
    assert b"victim" not in answer.content and b"forged" not in answer.content  # no echo
    assert store.status("victim@example.org") is None
    assert sendgrid_store.counts(store, "forged") == {}


@pytest.mark.parametrize("body", [b"{}", b'{"event": "bounce"}', b"[1, 2]", b'[{"a": 1}, "x"]', b"not json",
                                  b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000])
def test_a_signed_body_that_is_not_a_list_of_objects_is_400(client, body):
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 400


def test_a_body_over_the_limit_is_413(client):
    body = b"[" + b" " * (4 * 1024 * 1024) + b"]"
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 413


def test_events_we_do_not_know_or_without_issue_or_address_are_harmless(client, store):
    who = fresh()
    body = batch({"event": "bounce"}, {"event": "spamreport", "email": 12}, {"event": "made-up", "email": who,
                                                                          "issue": "x"},
                 {"event": "dropped", "email": who, "reason": "Exceeded Max Size"},
                 {"event": "click", "email": who, "issue": "x-issue", "url": "javascript:alert(1)"})
    assert client.post(PATH, content=body, headers=signed(body)).status_code == 204
    assert store.status(who) is None
    assert sendgrid_store.counts(store, "x-issue") == {"click": 1} and sendgrid_store.clicks(store, "x-issue") == []


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                   max_size=4), max_leaves=12)
_EVENT = st.fixed_dictionaries({"event": st.sampled_from(["bounce", "dropped", "spamreport", "click", "open",
                                                           "unsubscribe", "x"])},
                               optional={"email": st.one_of(st.text(max_size=20), st.emails(), _JSON),
                                         "issue": _JSON, "type": st.sampled_from(["bounce", "blocked", ""]),
                                         "reason": _JSON, "status": _JSON, "url": _JSON, "timestamp": _JSON,
                                         "sg_event_id": _JSON})


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.one_of(st.binary(max_size=500), st.lists(_EVENT, max_size=5).map(lambda v: json.dumps(v).encode()),
                         _JSON.map(lambda v: json.dumps(v).encode())))
def test_generated_signed_bodies_never_make_a_500(client, payload):
    assert client.post(PATH, content=payload, headers=signed(payload)).status_code in (204, 400)


def test_without_a_configured_key_the_hook_is_503_and_says_why_in_the_log(tmp_path, caplog):
    from starlette.testclient import TestClient

    app = create_app(ROOT / "newsletter.toml", tmp_path / "state", {"NEWSLETTER_SECRET": "Hk3Pz8QwLr5Tn2Vb7Xc4Md9Fs6Jg1Ya0Ue"})
    body = batch({"event": "spamreport", "email": "a@example.org"})
    with TestClient(app) as c:
        assert c.post(PATH, content=body, headers=signed(body)).status_code == 503
    assert f"{KEY_VAR} is not set" in caplog.text


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"garbage").decode(),
                                   base64.b64encode(ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
                                       serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)).decode()],
                         ids=["not-a-key", "not-der", "p384-not-p256"])  # stable ids: a generated key differs per run
def test_a_malformed_key_stops_start_up_with_one_line(tmp_path: Path, value):
    with pytest.raises(NewsletterError, match=f"{KEY_VAR} is not an ECDSA P-256 public key"):
        create_app(ROOT / "newsletter.toml", tmp_path / "state", {"NEWSLETTER_SECRET": "Hk3Pz8QwLr5Tn2Vb7Xc4Md9Fs6Jg1Ya0Ue", KEY_VAR: value})


def test_a_pem_key_works_too(tmp_path: Path):
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    app = create_app(ROOT / "newsletter.toml", tmp_path / "state", {"NEWSLETTER_SECRET": "Hk3Pz8QwLr5Tn2Vb7Xc4Md9Fs6Jg1Ya0Ue", KEY_VAR: pem})
    assert app.state.webhook_key.public_numbers() == KEY.public_key().public_numbers()
