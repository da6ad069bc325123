"""The example earns no SpamAssassin points from anything the sender controls (issue 21).

The example issue is sent with the example settings to the outbox (the CLI, the real ledger),
and the .eml goes through SpamAssassin 4 (Debian's `spamassassin`, .ci/install-system.sh) in
local mode (`-L`: no DNS or network tests). Any rule scoring more than 0.01 fails the test unless
it is one the environment decides, not the sender: the outbox message was never relayed, so it
has no Received headers, and it is HTML by design. Skips without spamassassin, unless CI is set.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS

ENVIRONMENT = {"NO_RECEIVED", "NO_RELAYS", "ALL_TRUSTED", "HTML_MESSAGE"}
LIMIT = 0.01


def _spamassassin() -> str:
    found = shutil.which("spamassassin")
    if found:
        return found
    reason = "SpamAssassin is not installed (apt-get install spamassassin: .ci/install-system.sh)"
    if os.environ.get("CI"):
        pytest.fail(reason + ": missing in CI")
    pytest.skip(reason)


def _scores(sa: str, eml: Path, home: Path) -> dict[str, float]:
    """Every rule that hit, with its score, from a header of SpamAssassin's own (-t: test mode)."""
    run = subprocess.run([sa, "-t", "-L", "--cf", "add_header all Tests _TESTSSCORES(,)_"],
                         input=eml.read_bytes(), capture_output=True, timeout=300, check=True,
                         env={**os.environ, "HOME": str(home)})
    msg = email.message_from_bytes(run.stdout, policy=email.policy.compat32)
    header = re.sub(r"\s+", "", msg["X-Spam-Tests"] or "")
    assert header, run.stdout[:2000]
    return {name: float(score) for name, score in (hit.split("=") for hit in header.split(","))}


def test_the_example_earns_no_points_the_sender_controls(tmp_path: Path, monkeypatch):
    sa = _spamassassin()
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    (tmp_path / "issues").mkdir()
    shutil.copy(EXAMPLE_ISSUE, tmp_path / "issues" / EXAMPLE_ISSUE.name)
    (tmp_path / "list.csv").write_text("email,name\nann@example.org,Ann Able\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSLETTER_SECRET", "Tve3VeyUerjEvtSfM9DqdNEiSvyd15e1OS6Iy_T-lOE")
    r = CliRunner().invoke(app, ["send", f"issues/{EXAMPLE_ISSUE.name}", "--list", "list.csv", "--yes"])
    assert r.exit_code == 0, r.output
    [eml] = (tmp_path / "outbox" / EXAMPLE_ISSUE.stem).glob("*.eml")
    urls = re.findall(r"https?://[^\s\"'<>]+", eml.read_text(encoding="utf-8"))
    assert urls and not [u for u in urls if "example.org" in u and "ann" in u.lower()], urls  # token links
    scores = _scores(sa, eml, tmp_path)
    assert "HTML_MESSAGE" in scores, scores  # SpamAssassin looked at the HTML part
    sender = {rule: score for rule, score in scores.items() if rule not in ENVIRONMENT and score > LIMIT}
    assert sender == {}, scores
