"""`check` reports say something true for every count, including none."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter_mailer.checks import run_checks
from newsletter_mailer.compose import compose
from tests.conftest import MINI_ISSUE

IMAGE = """    image:
      src: https://example.org/a.png
      alt: an image
"""
SECOND = "  - heading: Third\n    body: More.\n    image: {src: 'https://example.org/b.png', alt: another}\n"


@pytest.mark.parametrize("text, expected", [
    (MINI_ISSUE.replace(IMAGE, ""), "no images"),
    (MINI_ISSUE, "the image has alt text"),
    (MINI_ISSUE + SECOND, "both images have alt text"),
    (MINI_ISSUE + SECOND + SECOND.replace("Third", "Fourth"), "all 3 images have alt text"),
])
def test_the_alt_text_check_counts_truthfully(newsletter_dir: Path, text, expected):
    from newsletter_mailer.settings import load_settings

    toml = newsletter_dir / "newsletter.toml"  # without the example's header logo: only the issue's images
    toml.write_text("".join(l for l in toml.read_text(encoding="utf-8").splitlines(keepends=True)
                            if not l.startswith("logo_")), encoding="utf-8")
    settings, _ = load_settings(toml)
    path = newsletter_dir / "issues" / "mini.yaml"
    path.write_text(text, encoding="utf-8")
    messages = [c.message for c in run_checks(compose(path, settings, newsletter_dir))]
    assert expected in messages, messages
    assert not any("all 0" in m or "all 1 " in m for m in messages if "alt" in m)
