"""The ledger's batch writes on each backend (one statement a batch on PostgreSQL): every outcome
recorded as the row-by-row statements recorded it."""

from __future__ import annotations

from newsletter_mailer.providers.base import Outcome
from newsletter_mailer.state import State


def test_a_batch_begins_and_finishes_with_each_outcome(tmp_path, database_url):
    ledger = State(tmp_path / "state", database_url).ledger()
    try:
        emails = ["A@example.org", "b@example.org", "c@example.org", "d@example.org"]
        ledger.begin("i1", emails, "smtp", ["<a@x>", "<b@x>", "<c@x>", None])
        assert ledger.counts("i1")["uncertain"] == 4  # committed 'sending' before the attempt
        ledger.finish("i1", [Outcome("A@example.org", True, "<a2@x>"), Outcome("b@example.org", False, error="no"),
                             Outcome("c@example.org", False, error="timeout", uncertain=True),
                             Outcome("d@example.org", False, error="refused", permanent=True)])
        rows = {r.email: r for r in ledger.rows("i1")}
        assert (rows["a@example.org"].status, rows["a@example.org"].message_id) == ("sent", "<a2@x>")
        assert (rows["b@example.org"].status, rows["b@example.org"].message_id, rows["b@example.org"].reason) \
            == ("failed", None, "no")
        assert (rows["c@example.org"].status, rows["c@example.org"].message_id) == ("uncertain", "<c@x>")
        assert (rows["d@example.org"].status, rows["d@example.org"].permanent) == ("failed", True)
        ledger.begin("i1", ["b@example.org"], "smtp", ["<b2@x>"])
        again = next(ledger.rows("i1", "sending"))
        assert (again.email, again.attempts, again.message_id, again.reason) == ("b@example.org", 2, "<b2@x>", None)
        assert ledger.states("i1")["a@example.org"] == ("sent", False)
    finally:
        ledger.close()
