"""doiuse-email (npm, caniemail data) on the example's email.html for Gmail, Outlook and Apple
Mail: no error beyond the committed baseline of what today's template already uses (a template
change that adds one must update tests/baselines/doiuse-email.json deliberately, with
UPDATE_BASELINE=1). Skips without node or the package, unless CI is set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from newsletter_mailer.compose import compose
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT

SCRIPT = ROOT / ".ci" / "doiuse-email.mjs"
BASELINE = ROOT / "tests" / "baselines" / "doiuse-email.json"


def test_no_new_doiuse_email_errors(tmp_path):
    node = shutil.which("node")
    if not node or not (ROOT / ".ci" / "node_modules" / "doiuse-email").is_dir():
        reason = "doiuse-email needs node and .ci/node_modules/doiuse-email (bash .ci/install-system.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason + ": missing in CI")
        pytest.skip(reason)
    settings, sdir = load_settings(EXAMPLE_SETTINGS)
    email = tmp_path / "email.html"
    email.write_text(compose(EXAMPLE_ISSUE, settings, sdir).email_html_with_placeholders(), encoding="utf-8")
    run = subprocess.run([node, str(SCRIPT), str(email)], capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(run.stdout)
    assert found, "doiuse-email reported nothing: is it checking?"
    if os.environ.get("UPDATE_BASELINE") == "1":
        BASELINE.parent.mkdir(exist_ok=True)
        BASELINE.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    new = sorted(set(found) - set(json.loads(BASELINE.read_text(encoding="utf-8"))))
    assert new == [], new
