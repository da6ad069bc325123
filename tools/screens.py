"""Regenerate the screenshots in docs/images: `python -m tools.screens` (from the repository root).

The preview page (`preview.png`, the README's picture), the example issue's email at 375 and 600 px in light and dark mode, the same email with every image
blocked (what a reader with images off sees), and a report page in light and dark. Drawn by the
system Chromium through Playwright, as the browser tests are (tests/helpers/browser.py); remote
images are replaced by a flat placeholder, so nothing is fetched. The report comes from a send of
the example to the outbox with made-up readers' responses in a throwaway state folder.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
EMAIL_HEIGHT = 1400  # the top of the email: header, hero and first sections (small PNGs)


def _png(w: int, h: int, rgb: tuple[int, int, int] = (205, 198, 214)) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _email(work: Path) -> tuple[Path, Path]:
    """(email.html with placeholder images, email.html as sent: its images are blocked when drawn)."""
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    settings, sdir = load_settings(ROOT / "newsletter.toml")
    html = compose(ROOT / "issues" / "2020-09-cscp.yaml", settings, sdir).sample("reader@example.org", "Sam")[2]
    uri = "data:image/png;base64," + base64.b64encode(_png(544, 272)).decode()
    shown, sent = work / "email.html", work / "email-sent.html"
    shown.write_text(re.sub(r'src="https://[^"]+"', f'src="{uri}"', html), encoding="utf-8")
    sent.write_text(html, encoding="utf-8")
    return shown, sent


def _report(work: Path) -> Path:
    """A report page of the example sent to 400 made-up readers, some of whom answered."""
    from typer.testing import CliRunner

    from newsletter_mailer.audience.store import Change
    from newsletter_mailer.state import State
    from newsletter_mailer.cli import app

    nl = work / "nl"
    (nl / "issues").mkdir(parents=True)
    shutil.copy(ROOT / "newsletter.toml", nl / "newsletter.toml")
    shutil.copy(ROOT / "issues" / "2020-09-cscp.yaml", nl / "issues")
    tags = ("parents", "practitioners", "schools", "parents;practitioners")  # the example's variants
    (nl / "list.csv").write_text("email,name,tags\n" + "".join(f"reader{i}@example.org,Reader {i},{tags[i % 7 % 4]}\n"
                                                               for i in range(400)), encoding="utf-8")
    args = ["--config", str(nl / "newsletter.toml"), "--state", str(nl / "state")]
    import secrets

    env = {"NEWSLETTER_SECRET": secrets.token_urlsafe(32), "SENDGRID_API_KEY": ""}
    runner = CliRunner()
    r = runner.invoke(app, ["send", str(nl / "issues" / "2020-09-cscp.yaml"), "--list", str(nl / "list.csv"),
                            "--yes", "--outbox", str(nl / "outbox"), *args], env=env)
    if r.exit_code:
        sys.exit(r.output)
    store = State(nl / "state").audience()
    store.record([Change(f"reader{i}@example.org", status, "link", issue="2020-09-cscp")
                  for i, status in [(1, "unsubscribed"), (2, "unsubscribed"), (3, "bounced"), (4, "complained"),
                                    (5, "unsubscribed")]])
    store.close()
    out = work / "report.html"
    r = runner.invoke(app, ["report", str(nl / "issues" / "2020-09-cscp.yaml"), "--out", str(out), *args], env=env)
    if r.exit_code:
        sys.exit(r.output)
    return out


def _preview(work: Path) -> Path:
    """The build's preview.html of the example issue, as `newsletter compose` writes it."""
    import subprocess

    subprocess.run([sys.executable, "-m", "newsletter_mailer", "compose", str(ROOT / "issues" / "2020-09-cscp.yaml"),
                    "--config", str(ROOT / "newsletter.toml"), "--out", str(work / "build")],
                   check=True, stdout=subprocess.DEVNULL)
    return work / "build" / "preview.html"


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.helpers.browser import close_browser, open_page

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shown, sent = _email(work)
        report = _report(work)
        shots = [(_preview(work), 1280, "light", "preview.png", False, 860)]
        for width in (375, 600):
            for scheme in ("light", "dark"):
                shots.append((shown, width, scheme, f"email-{width}-{scheme}.png", False, EMAIL_HEIGHT))
        shots.append((sent, 600, "light", "email-images-off.png", False, EMAIL_HEIGHT))
        for scheme in ("light", "dark"):
            shots.append((report, 1200, scheme, f"report-{scheme}.png", True, 900))
        try:
            for path, width, scheme, name, full, height in shots:
                with open_page(path, width, height, color_scheme=scheme) as page:
                    page.screenshot(path=str(OUT / name), full_page=full)
                print(f"wrote {(OUT / name).relative_to(ROOT)} ({(OUT / name).stat().st_size // 1024} KB)")
        finally:
            close_browser()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    main()
