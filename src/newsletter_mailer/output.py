"""Writing composed files: email.html, email.txt, web.html and preview.html under build/<slug>/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from newsletter_mailer.checks import Check
from newsletter_mailer.compose import Composed
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.preview import preview_page


def write_atomic(path: Path, data: str | bytes) -> bool:
    """Write via a temp file and rename; skip when the content is unchanged. True if written."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return False
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; build and site files are meant to be served
        os.replace(tmp, path)
    except OSError as exc:
        raise NewsletterError(f"cannot write: {exc.strerror}", path=path) from None
    return True


def write_build(c: Composed, checks: list[Check], out_dir: Path, settings_dir: Path | None) -> dict[str, Path]:
    files = {
        "email.html": c.email_html_with_placeholders(),
        "email.txt": c.text_with_placeholders(),
        "web.html": c.web_html,
        "preview.html": preview_page(c, checks, settings_dir),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = out_dir / name
        write_atomic(paths[name], content)
    return paths
