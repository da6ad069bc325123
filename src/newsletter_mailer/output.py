"""Writing composed files: email.html, email.txt, web.html and preview.html under build/<slug>/."""

from __future__ import annotations

import errno
from pathlib import Path

from newsletter_mailer import files, media
from newsletter_mailer.checks import Check
from newsletter_mailer.compose import Composed
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.preview import preview_page, previewed


def write_atomic(path: Path, data: str | bytes, *, root: Path | None = None) -> bool:
    """files.write_file (0644, never through a link; with root, no linked folder below it either),
    skipped when the content is unchanged so a rebuild keeps mtimes. True if written."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if files.read_no_follow(path) == raw:
            return False
    except OSError:
        pass
    try:
        files.write_file(path, raw, files.PUBLIC, root=root)
    except OSError as exc:
        raise NewsletterError(f"cannot write: {exc.strerror}", path=path,
                              hint="remove the link or choose another folder" if exc.errno in _LINKED else None) from None
    return True


_LINKED = (errno.ELOOP, errno.ENOTDIR)


def write_build(c: Composed, checks: list[Check], out_dir: Path, settings_dir: Path | None,
                editions=None, shown=(), readers=None) -> dict[str, Path]:
    """The files of build/<slug>/; email.html keeps each image's published address, the pages
    opened from here show local images from their files."""
    def local(html: str) -> str:
        return html if c.source is None else media.shown_locally(html, c.issue, c.source, c.settings, c.slug, out_dir)

    contents = {
        "email.html": c.email_html_with_placeholders(),
        "email.txt": c.text_with_placeholders(),
        "web.html": local(c.web_html),
        "preview.html": local(preview_page(c, checks, settings_dir, variants=previewed(editions, shown, readers))),
    }
    paths = {}
    for name, content in contents.items():
        paths[name] = out_dir / name
        write_atomic(paths[name], content, root=out_dir)
    return paths
