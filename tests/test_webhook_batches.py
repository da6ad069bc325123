"""SendGrid's webhook on our unsubscribe group only, each event of a batch stored on its own
(issue 18): against the real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from newsletter_mailer.web.webhook import KEY_VAR
from tests.helpers.webserver import start, stop
from tests.test_webhook import KEY, PATH, batch, public_b64, signed
from newsletter_mailer.state import State

GROUP = 7


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hook(request, tmp_path_factory):
    url = None
    if request.param == "postgres":
        from newsletter_mailer.state.migrations import init_database

        url = request.getfixturevalue("pg_cluster").new_database()
        init_database(url)
    env = {KEY_VAR: public_b64(KEY), **({"NEWSLETTER_DATABASE_URL": url} if url else {})}
    s = start(tmp_path_factory.mktemp("hook"), "", env,
              edit=lambda t: t.replace("[delivery.sendgrid]\n", f"[delivery.sendgrid]\nasm_group_id = {GROUP}\n", 1))
    with httpx.Client(base_url=s.url, timeout=30) as c:
        yield s, c, url
    stop(s)


def fresh() -> str:
    return f"reader-{uuid.uuid4().hex[:10]}@example.org"


def _statuses(server, url, emails):
    store = State(server.state, url).audience()
    try:
        return {e: (store.status(e).status if store.status(e) else None) for e in emails}
    finally:
        store.close()


def test_group_events_for_another_group_change_nothing(hook):
    server, c, url = hook
    ours, theirs, back, missing = fresh(), fresh(), fresh(), fresh()
    body = batch({"event": "group_unsubscribe", "email": ours, "asm_group_id": GROUP},
                 {"event": "group_unsubscribe", "email": theirs, "asm_group_id": GROUP + 1},
                 {"event": "group_unsubscribe", "email": back, "asm_group_id": str(GROUP + 2)},
                 {"event": "group_resubscribe", "email": back, "asm_group_id": GROUP + 2},
                 {"event": "group_unsubscribe", "email": missing})
    assert c.post(PATH, content=body, headers=signed(body)).status_code == 204
    assert _statuses(server, url, [ours, theirs, back, missing]) == {
        ours: "unsubscribed", theirs: None, back: None, missing: None}


def test_one_unstorable_event_never_loses_its_neighbours(hook):
    server, c, url = hook
    angry, gone, blocked, nul, ok = fresh(), fresh(), fresh(), fresh(), fresh()
    issue = f"issue-{uuid.uuid4().hex[:6]}"
    body = batch({"event": "bounce", "type": "blocked", "email": blocked, "timestamp": 2 ** 70, "issue": issue},
                 {"event": "spamreport", "email": angry, "issue": issue},
                 {"event": "bounce", "email": nul.replace("@", "\x00@"), "type": "bounce", "issue": issue},
                 {"event": "bounce", "type": "bounce", "email": gone, "status": "5.1.1", "issue": issue},
                 {"event": "bounce", "type": "blocked", "email": blocked, "timestamp": -(2 ** 70)},
                 {"event": "unsubscribe", "email": ok, "issue": issue})
    answer = c.post(PATH, content=body, headers=signed(body))
    assert answer.status_code == 204
    assert _statuses(server, url, [angry, gone, ok, blocked]) == {
        angry: "complained", gone: "bounced", ok: "unsubscribed", blocked: None}
    log = server.log.read_text()
    found = re.findall(r"(\d+) event\(s\) could not be stored: .*bounce \(\w+\)", log)
    assert found and int(found[-1]) >= 2  # both huge timestamps (and on PostgreSQL the NUL)
    for address in (angry, gone, blocked, nul.split("@")[0], ok):
        assert address not in log
    assert "Traceback" not in log
    again = c.post(PATH, content=body, headers=signed(body))  # SendGrid's retry: nothing counted twice
    assert again.status_code == 204
    store = State(server.state, url).audience()
    try:
        assert len(store.history(angry)) == 1
    finally:
        store.close()
