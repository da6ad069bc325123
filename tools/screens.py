"""The documentation's pictures, regenerated from the example issue: `python -m tools.screens`.

Run from the repository's folder (it reads `issues/`, `newsletter.toml` and writes
`docs/images/`). Each entry of SCREENS composes an issue with `newsletter compose` and
photographs one of its build pages in headless Chromium, the way the tests open pages
(tests/helpers/browser.py: the system Chromium through playwright, no network but loopback
and files, so remote images stay out and the picture is the same on every machine).
Add a picture by adding an entry.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from newsletter_mailer.output import write_atomic

OUT = Path("docs") / "images"


@dataclass(frozen=True)
class Screen:
    """One picture: which issue, which build page, the viewport, and playwright context options."""

    name: str
    issue: str = "issues/2020-09-cscp.yaml"
    page: str = "preview.html"
    width: int = 1280
    height: int = 860
    options: dict = field(default_factory=dict)


SCREENS = [
    Screen("preview.png"),
]


def shoot(screen: Screen, build: Path) -> bytes:
    """Compose the issue into `build` and return the PNG of its page."""
    from tests.helpers.browser import open_page  # the tests' one way to open a page

    subprocess.run([sys.executable, "-m", "newsletter_mailer", "compose", screen.issue, "--out", str(build)],
                   check=True, stdout=subprocess.DEVNULL)
    with open_page(build / screen.page, screen.width, screen.height, **screen.options) as page:
        return page.screenshot(type="png")


def main() -> int:
    if not Path(SCREENS[0].issue).is_file():
        print(f"error: {SCREENS[0].issue} not found: run `python -m tools.screens` from the repository's folder",
              file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, screen in enumerate(SCREENS):
            png = shoot(screen, Path(tmp) / str(i))
            written = write_atomic(OUT / screen.name, png)
            print(f"{'wrote' if written else 'unchanged'} {OUT / screen.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
