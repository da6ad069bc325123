"""Local section images: a path relative to the issue file instead of an http(s) address.

`newsletter publish` copies such a file to `<site>/<slug>/<path>`; the email refers to it at
`<web_base_url>/<slug>/<path>` (mail clients need absolute addresses), the published page by the
relative `<path>`, and the preview and web copy in build/ by the path to the file itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from newsletter_mailer import files
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.schema import Issue
from newsletter_mailer.sourcefile import field_path, line_in_file


def is_local(src: str) -> bool:
    return not src.lower().startswith(("http://", "https://"))


def relative_url(src: str) -> str:
    """The URL-path of a local image relative to the issue's page (`images/a b.png` -> `images/a%20b.png`)."""
    return quote(src, safe="/")


def image_url(settings, slug: str, src: str) -> str:
    """What the email and the web copy use: remote addresses as given, local files under the issue's page."""
    if not is_local(src):
        return src
    return settings.web_url(slug) + relative_url(src)


def shown_locally(html: str, issue: Issue, issue_path: Path, settings, slug: str, out_dir: Path) -> str:
    """The preview and web copy written to build/: a local image is not online until `publish`,
    so its <img src> (plain, or escaped inside the preview's srcdoc) becomes the path from
    out_dir to the file itself; other uses (the share card) keep the published address."""
    for rel, file in image_files(issue, issue_path):
        url = image_url(settings, slug, rel)
        here = quote(Path(os.path.relpath(file.resolve(), out_dir.resolve())).as_posix(), safe="/")
        for q in ('"', "&quot;", "&#34;"):
            html = html.replace(f"src={q}{url}{q}", f"src={q}{here}{q}")
    return html


def local_images(issue: Issue) -> list[tuple[tuple, str]]:
    """(where in the issue file, relative path) of each local image, in order: the hero, then sections."""
    found: list[tuple[tuple, str]] = []
    if issue.hero is not None and is_local(issue.hero.src):
        found.append((("hero", "src"), issue.hero.src))
    found += [(("sections", i, "image", "src"), s.image.src) for i, s in enumerate(issue.sections)
              if s.image is not None and is_local(s.image.src)]
    return found


def image_files(issue: Issue, issue_path: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of each distinct local image; files are found next to the issue file.
    Read one with read_image(issue_path, Path(relative path)), never with the file: that is joined
    to the issue's folder once already."""
    seen: dict[str, Path] = {}
    for _, rel in local_images(issue):
        seen.setdefault(rel, issue_path.parent / rel)
    return list(seen.items())


def inside(issue_path: Path, file: Path) -> Path | None:
    """The real path of a local image, `file` relative to the issue's folder, or None when it (a
    symlink, a file under a symlinked folder, a `../` or absolute path) leads outside that folder."""
    root = issue_path.parent.resolve()
    real = (issue_path.parent / file).resolve()
    return real if real.is_relative_to(root) and real != root else None


def read_image(issue_path: Path, file: Path) -> bytes:
    """The bytes of a local image (`file` relative to the issue's folder) for publish and --watch,
    read from its real path, only if that
    lies inside the issue's folder tree (checked again here: the file may have changed since)."""
    real = inside(issue_path, file)
    if real is None:
        raise _outside(file, issue_path)
    try:
        return files.read_no_follow(real)
    except OSError as exc:
        raise NewsletterError(f"cannot read: {exc.strerror}", path=file) from None


def check_local_images(issue: Issue, issue_path: Path) -> None:
    """Raise a NewsletterError naming the issue file, line and field when a local image is missing
    or leads outside the issue's folder (publish would copy it into the site, --watch serve it)."""
    for loc, rel in local_images(issue):
        file = issue_path.parent / rel
        outside = inside(issue_path, Path(rel)) is None
        if not outside and file.is_file():
            continue
        where = dict(line=line_in_file(issue_path, loc), field=field_path(loc))  # the error path only
        if outside:
            raise _outside(file, issue_path, **where)
        what = "is a folder, not an image file" if file.is_dir() else "image file not found"
        raise NewsletterError(f"{what}: {file}", path=issue_path, **where,
                              hint="a local image path is relative to the issue file's folder")


def _outside(file: Path, issue_path: Path, **where) -> NewsletterError:
    return NewsletterError(f"the image leads outside the issue's folder (a link?): {file}", path=issue_path,
                           hint=f"copy the image itself into {issue_path.parent} instead of linking to it", **where)
