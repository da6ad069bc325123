"""`newsletter publish`: the issues as a static site.

    <out>/index.html            the archive, newest first (templates/archive.html.j2)
    <out>/feed.xml              an Atom feed with absolute links under web_base_url
    <out>/<slug>/index.html     each issue's web copy, from the same template as the email
    <out>/<slug>/<path>         each local section image of that issue
    <out>/.published.json       what publish wrote, so a later run removes only its own files

Links inside the site are relative, so it works from any static host or opened as files.
A rebuild rewrites only files whose content changed and removes the pages of deleted issues.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote
from xml.etree import ElementTree as ET

from newsletter_mailer import media, render
from newsletter_mailer.compose import load_issue, web_copy
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.output import write_atomic
from newsletter_mailer.schema import Issue, slug_of
from newsletter_mailer.settings import Settings

ARCHIVE_TEMPLATE = "archive.html.j2"
MANIFEST = ".published.json"
PAGE = "index.html"
FEED = render.FEED
ATOM = "http://www.w3.org/2005/Atom"
_RESERVED = {PAGE, FEED, MANIFEST}


@dataclass(frozen=True)
class SiteIssue:
    path: Path
    slug: str
    issue: Issue
    subject: str  # merge fields filled with their defaults; plain text
    preheader: str
    page: str  # the web copy as published (relative links)
    images: tuple[tuple[str, Path], ...]

    @property
    def href(self) -> str:
        """The issue's page relative to the site root (explicit index.html: works opened as files too)."""
        return f"{quote(self.slug)}/{PAGE}"


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    left_out: list[tuple[Path, str]] = field(default_factory=list)
    published: list[SiteIssue] = field(default_factory=list)


def issue_files(settings_dir: Path) -> list[Path]:
    folder = settings_dir / "issues"
    if not folder.is_dir():
        raise NewsletterError("no issues folder", path=folder,
                              hint="issue files live in issues/ next to newsletter.toml")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
                  and not p.name.startswith("."))


def _site_slug(path: Path) -> str:
    """slug_of's rule, and no issue folder named like a file at the site's root."""
    slug = slug_of(path)
    if slug in _RESERVED:
        raise NewsletterError(f"the issue's folder would take the name of the site's {slug}", path=path,
                              hint="rename the file")
    return slug


def collect(settings: Settings, settings_dir: Path, drafts: bool, today: dt.date) -> tuple[list[SiteIssue], list[tuple[Path, str]]]:
    issues, left_out = [], []
    for path in issue_files(settings_dir):
        slug = _site_slug(path)
        issue = load_issue(path)
        if not drafts and issue.draft:
            left_out.append((path, "draft: true"))
            continue
        if not drafts and issue.date > today:
            left_out.append((path, f"dated {issue.date.isoformat()}, after today"))
            continue
        # The same rendering as the email's web copy, with links that work inside the site.
        web = web_copy(issue, path, settings, settings_dir, archive_url=f"../{PAGE}", feed_url=f"../{FEED}",
                       local_image=media.relative_url)
        images = tuple(media.image_files(issue, path))
        for rel, _ in images:
            if rel == PAGE:
                raise NewsletterError(f"a local image named '{rel}' would replace the issue's page",
                                      path=path, hint="rename the image")
        issues.append(SiteIssue(path, slug, issue, web.subject, web.preheader, web.page, images))
    issues.sort(key=lambda i: (i.issue.date, i.slug), reverse=True)
    return issues, left_out


def archive_page(issues: list[SiteIssue], settings: Settings, settings_dir: Path | None) -> str:
    view = render.View({
        "settings": settings,
        "brand": settings.brand,
        "feed_href": FEED,
        "issues": [{
            "slug": i.slug, "href": i.href, "subject": i.subject, "preheader": i.preheader,
            "date": i.issue.date.isoformat(), "date_label": f"{i.issue.date.day} {i.issue.date:%B %Y}",
            "draft": i.issue.draft,
        } for i in issues],
    })
    return render.render(tuple(render.search_path(settings_dir)), ARCHIVE_TEMPLATE, view)


def _rfc3339(d: dt.date) -> str:
    return f"{d.isoformat()}T00:00:00Z"


def atom_feed(issues: list[SiteIssue], settings: Settings, today: dt.date) -> str:
    """Atom 1.0 (RFC 4287). Dates are the issues' dates, so an unchanged site gives an unchanged feed."""
    base = settings.web_base
    ET.register_namespace("", ATOM)

    def el(parent, tag, text=None, **attrs):
        e = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            e.text = text
        return e

    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": settings.language})
    el(feed, "id", base + "/")
    el(feed, "title", settings.name)
    newest = max((i.issue.date for i in issues), default=today)
    el(feed, "updated", _rfc3339(newest))
    el(feed, "link", rel="self", type="application/atom+xml", href=f"{base}/{FEED}")
    el(feed, "link", rel="alternate", type="text/html", href=base + "/")
    author = el(feed, "author")
    el(author, "name", settings.from_name or settings.name)
    el(feed, "generator", "newsletter-mailer")
    for i in issues:
        url = settings.web_url(quote(i.slug))
        entry = el(feed, "entry")
        el(entry, "id", url)
        el(entry, "title", i.subject)
        el(entry, "published", _rfc3339(i.issue.date))
        el(entry, "updated", _rfc3339(i.issue.date))
        el(entry, "link", rel="alternate", type="text/html", href=url)
        el(entry, "summary", i.preheader or i.subject)
    ET.indent(feed, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"


def _read_manifest(out: Path) -> set[str]:
    path = out / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ValueError
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, KeyError, TypeError):
        raise NewsletterError("is not a manifest written by newsletter publish", path=path,
                              hint="delete it only if nothing else in the folder needs keeping") from None
    root = out.resolve()
    safe = set()
    for rel in files:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            continue
        if (out / rel).resolve().is_relative_to(root):
            safe.add(rel)
    return safe


def _write_manifest(out: Path, files: set[str]) -> None:
    data = {"generator": "newsletter publish", "note": "files written by newsletter publish; "
            "a file listed here is removed when its issue is gone", "files": sorted(files)}
    write_atomic(out / MANIFEST, json.dumps(data, indent=1, ensure_ascii=False) + "\n", root=out)


def _same(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def publish(settings: Settings, settings_dir: Path, out: Path, *, drafts: bool = False,
            today: dt.date | None = None) -> Report:
    today = today or dt.date.today()
    issues, left_out = collect(settings, settings_dir, drafts, today)
    report = Report(left_out=left_out, published=issues)

    # Everything the site should hold: relative posix path -> content.
    planned: dict[str, bytes] = {}
    for i in issues:
        planned[f"{i.slug}/{PAGE}"] = i.page.encode("utf-8")
        for rel, _ in i.images:
            planned[f"{i.slug}/{rel}"] = media.read_image(i.path, Path(rel))
    planned[PAGE] = archive_page(issues, settings, settings_dir).encode("utf-8")
    planned[FEED] = atom_feed(issues, settings, today).encode("utf-8")

    if out.exists() and not out.is_dir():
        raise NewsletterError("is a file, not a folder", path=out, hint="choose another --out")
    before = _read_manifest(out)

    # Never overwrite a file publish did not write (unless it already holds the same bytes).
    for rel, data in planned.items():
        target = out / rel
        if rel in before or not (target.exists() or target.is_symlink()):
            continue
        if target.is_symlink() or not target.is_file() or not _same(target, data):
            raise NewsletterError("exists and was not written by newsletter publish", path=target,
                                  hint="move it away or choose another --out")

    # Record the union first: an interrupted run still knows every file it may have written.
    _write_manifest(out, before | set(planned))
    for rel, data in planned.items():
        target = out / rel
        (report.written if write_atomic(target, data, root=out) else report.unchanged).append(target)

    for rel in sorted(before - set(planned)):
        target = out / rel
        if target.is_file() or target.is_symlink():
            try:
                target.unlink()
            except OSError as exc:
                raise NewsletterError(f"cannot remove: {exc.strerror}", path=target) from None
            report.removed.append(target)
        _prune(target.parent, out)
    _write_manifest(out, set(planned))
    return report


def _prune(folder: Path, root: Path) -> None:
    """Remove folders left empty by a removal, up to (not including) the site root."""
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and folder.is_relative_to(root):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = folder.parent
