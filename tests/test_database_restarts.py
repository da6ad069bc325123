"""`newsletter serve` with several workers on PostgreSQL, and a database that goes away.

uvicorn --workers 4 against the test cluster: concurrent one-click POSTs all recorded. The
server stopped under a running app: every POST answers 503 (never 200 without the write) and
the pool recovers once it is back. Restarted mid-send: the send stops with one line and the
same command resumes it, nobody mailed twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from newsletter_mailer import tokens
from newsletter_mailer.state.migrations import init_database
from tests.conftest import without_web
from tests.helpers import webserver
from tests.helpers.postgres import query
from tests.helpers.sinks import SinkProcess, read_smtp_log, wait_until
from tests.test_two_senders import N, env_for, finish, paced_folder, start
from tests.test_crash_safety import all_addresses

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(pg_cluster):
    url = pg_cluster.new_database()
    init_database(url)
    return url


def serve(folder, url: str, workers: int) -> webserver.WebServer:
    """webserver.start's deployment, on PostgreSQL, with uvicorn's --workers."""
    from newsletter_mailer.settings import load_settings

    port = webserver.free_port()
    base = f"http://127.0.0.1:{port}"
    toml = folder / "newsletter.toml"
    toml.write_text(without_web((webserver.ROOT / "newsletter.toml").read_text()) + f'\n[web]\nbase_url = "{base}"\n')
    state, outbox, log = folder / "state", folder / "outbox", folder / "server.log"
    env = dict(os.environ, NEWSLETTER_CONFIG=str(toml), NEWSLETTER_STATE=str(state), NEWSLETTER_OUTBOX=str(outbox),
               NEWSLETTER_SECRET=webserver.SECRET, NEWSLETTER_DATABASE_URL=url)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "newsletter_mailer.web:app", "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", str(workers)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=folder)
    server = webserver.WebServer(base, folder, state, outbox, log, webserver.SECRET.encode(),
                                 load_settings(toml)[0].list_id_header, proc)
    webserver.wait_ready(server)
    return server


def unsubscribe(server: webserver.WebServer, email: str) -> int:
    token = tokens.make_unsubscribe(server.secret, server.list_id, email, "mini")
    return httpx.post(f"{server.url}/u/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=30).status_code


def test_four_workers_record_every_concurrent_one_click_post(tmp_path, pg_url):
    server = serve(tmp_path, pg_url, workers=4)
    emails = [f"reader{i:03d}@example.org" for i in range(200)]
    try:
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda e: unsubscribe(server, e), emails))
        pids = {r[0] for r in query(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name='newsletter-serve'")}
    finally:
        webserver.stop(server)
    assert codes == [200] * len(emails)
    assert query(pg_url, "SELECT count(*) FROM audience WHERE status='unsubscribed'") == [(len(emails),)]
    assert len(pids) >= 2  # the workers each had their own pool


def test_a_stopped_database_answers_503_and_the_pool_recovers(tmp_path, pg_cluster, pg_url):
    server = serve(tmp_path, pg_url, workers=1)
    try:
        assert unsubscribe(server, "before@example.org") == 200
        pg_cluster.halt()
        try:
            assert unsubscribe(server, "during@example.org") == 503
        finally:
            pg_cluster.resume()
        assert unsubscribe(server, "after@example.org") == 200
    finally:
        webserver.stop(server)
    recorded = {r[0] for r in query(pg_url, "SELECT email FROM audience WHERE status='unsubscribed'")}
    assert recorded == {"before@example.org", "after@example.org"}  # no 200 without its write


def test_a_restart_mid_send_stops_it_cleanly_and_the_same_command_resumes(tmp_path, pg_cluster, pg_url):
    folder = paced_folder(tmp_path / "nl")
    log = tmp_path / "smtp.log"
    with SinkProcess("smtp", log) as port:
        env = env_for(port, pg_url)
        sending = start(folder, env)
        assert wait_until(lambda: len(read_smtp_log(log)) >= 5, timeout=60, poll=0.01)
        pg_cluster.restart()
        code, out, err = finish(sending)
        assert code == 1 and "Traceback" not in err, out + err
        assert "the send stopped: cannot reach the database" in err and "resume with the same" in err
        assert len(err.strip().splitlines()) == 1 and "sent: " in out  # what went out, then one line
        code, out, err = finish(start(folder, env))
        received = Counter(to for to, _ in read_smtp_log(log))
    assert code == 0, out + err
    assert set(received.values()) == {1}, "nobody mailed twice"
    missing = all_addresses(N) - set(received)
    assert not missing or "held back" in out
