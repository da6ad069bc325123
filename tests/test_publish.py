"""`newsletter publish`: the static site (issue pages, archive index, Atom feed), rebuilds,
drafts, local images, and a real browser following every link of the index."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
import zlib
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit
from xml.etree import ElementTree as ET

import lxml.html
import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.errors import NewsletterError
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, MINI_ISSUE

runner = CliRunner()
ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://example.org/newsletter"
TODAY = dt.date.today()
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def png(width: int = 3, height: int = 2, rgb: bytes = b"\x80\x20\x60") -> bytes:
    """A small valid PNG, so a browser really decodes it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + rgb * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


LOCAL = MINI_ISSUE.replace("src: https://example.org/a.png", "src: images/pic one.png").replace(
    "date: 2020-09-01", "date: 2021-03-05").replace("subject: 'Hello", "subject: 'Tom & <Jerry> say hello")

DRAFT = """\
subject: A draft
preheader: not yet
date: 2021-01-01
draft: true
sections:
  - heading: Soon
    body: Coming soon.
"""

FUTURE = DRAFT.replace("draft: true\n", "").replace("A draft", "From the future").replace(
    "2021-01-01", (TODAY + dt.timedelta(days=3)).isoformat())


@pytest.fixture
def nl(tmp_path: Path, monkeypatch) -> Path:
    """The example settings, the example issue, one with a local image, a draft and a future issue."""
    shutil.copy(EXAMPLE_SETTINGS, tmp_path / "newsletter.toml")
    issues = tmp_path / "issues"
    (issues / "images").mkdir(parents=True)
    shutil.copy(EXAMPLE_ISSUE, issues / EXAMPLE_ISSUE.name)
    (issues / "2021-03-local.yaml").write_text(LOCAL, encoding="utf-8")
    (issues / "images" / "pic one.png").write_bytes(png())
    (issues / "2021-01-draft.yaml").write_text(DRAFT, encoding="utf-8")
    (issues / "2099-future.yaml").write_text(FUTURE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def publish(nl: Path, *extra: str):
    result = runner.invoke(app, ["publish", "--config", str(nl / "newsletter.toml"), "--out", str(nl / "site"),
                                 *extra])
    return result


def published(nl: Path, *extra: str):
    result = publish(nl, *extra)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def doc(path: Path):
    return lxml.html.fromstring(path.read_bytes())


def snapshot(site: Path) -> dict[str, int]:
    return {str(p.relative_to(site)): p.stat().st_mtime_ns for p in sorted(site.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# the site


def test_publish_writes_a_page_per_issue_an_index_and_a_feed(nl):
    result = published(nl)
    site = nl / "site"
    assert (site / "2020-09-cscp" / "index.html").is_file()
    assert (site / "2021-03-local" / "index.html").is_file()
    assert (site / "index.html").is_file() and (site / "feed.xml").is_file()
    assert not (site / "2021-01-draft").exists() and not (site / "2099-future").exists()
    for rel in ("2020-09-cscp/index.html", "2021-03-local/index.html", "index.html", "feed.xml"):
        assert f"wrote site/{rel}" in result.stdout
    assert "published 2 issues" in result.stdout


def test_index_lists_issues_newest_first_with_date_subject_and_preheader_escaped(nl):
    published(nl)
    page = doc(nl / "site" / "index.html")
    items = page.cssselect("ol.issues li")
    assert len(items) == 2
    first, second = items
    a = first.cssselect("a")[0]
    assert a.get("href") == "2021-03-local/index.html"
    assert a.text_content() == 'Tom & <Jerry> say hello friend'  # merge field default, text not markup
    assert first.cssselect("time")[0].get("datetime") == "2021-03-05"
    assert first.cssselect(".issue-preheader")[0].text_content() == "A short preview line"
    raw = (nl / "site" / "index.html").read_text(encoding="utf-8")
    assert "Tom &amp; &lt;Jerry&gt;" in raw and "<Jerry>" not in raw
    assert second.cssselect("a")[0].get("href") == "2020-09-cscp/index.html"
    assert second.cssselect("a")[0].text_content() == "CSCP Newsletter - September 2020"
    assert second.cssselect("time")[0].text_content() == "1 September 2020"
    assert "It’s Not OK" in second.cssselect(".issue-preheader")[0].text_content()
    feed = page.cssselect('link[rel="alternate"][type="application/atom+xml"]')
    assert feed and feed[0].get("href") == "feed.xml"


def test_feed_is_atom_with_absolute_links_and_rfc3339_dates(nl):
    published(nl)
    root = ET.parse(nl / "site" / "feed.xml").getroot()
    assert root.tag == f"{ATOM}feed"

    def one(el, tag):
        found = el.findall(f"{ATOM}{tag}")
        assert len(found) == 1, (tag, found)
        return found[0]

    assert one(root, "id").text == BASE + "/"
    assert one(root, "title").text == "CSCP Newsletter"
    assert RFC3339.match(one(root, "updated").text)
    assert one(one(root, "author"), "name").text
    links = {l.get("rel"): l.get("href") for l in root.findall(f"{ATOM}link")}
    assert links == {"self": f"{BASE}/feed.xml", "alternate": f"{BASE}/"}
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 2
    ids = set()
    for e in entries:
        ids.add(one(e, "id").text)
        assert one(e, "title").text
        updated = one(e, "updated").text
        assert RFC3339.match(updated), updated
        dt.datetime.fromisoformat(updated.replace("Z", "+00:00"))
        href = one(e, "link").get("href")
        assert href.startswith(BASE + "/") and urlsplit(href).scheme == "https"
        assert one(e, "id").text == href
        assert one(e, "summary").text
    assert len(ids) == 2
    first = entries[0]
    assert one(first, "link").get("href") == f"{BASE}/2021-03-local/"
    assert one(first, "summary").text == "A short preview line"
    assert one(first, "title").text == "Tom & <Jerry> say hello friend"
    assert one(root, "updated").text == "2021-03-05T00:00:00Z"


def test_issue_page_is_the_web_copy_with_relative_site_links(nl):
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    published(nl)
    html = (nl / "site" / "2020-09-cscp" / "index.html").read_text(encoding="utf-8")
    page = lxml.html.fromstring(html)
    assert page.findtext(".//title") == "CSCP Newsletter - September 2020"
    more = [a for a in page.iter("a") if a.text_content().startswith("More issues")]
    assert [a.get("href") for a in more] == ["../index.html"]
    assert "View this email in your browser" not in html and "Unsubscribe" not in html
    settings, sdir = load_settings(nl / "newsletter.toml")
    web = compose(nl / "issues" / "2020-09-cscp.yaml", settings, sdir).web_html
    # Every link inside the site is relative, the feed's too (head and footer); the canonical URL
    # and the share card's image stay absolute by design.
    feeds = [e.get("href") for e in page.iter("a", "link") if e.get("href", "").endswith("feed.xml")]
    assert feeds and set(feeds) == {"../feed.xml"}, feeds
    assert page.cssselect('link[rel="canonical"]')[0].get("href") == f"{BASE}/2020-09-cscp/"
    # The same template's web copy; only the archive and feed links differ.
    assert html == web.replace(f'href="{BASE}/"', 'href="../index.html"').replace(
        f'href="{BASE}/feed.xml"', 'href="../feed.xml"')


def test_view_in_browser_link_of_each_email_is_that_issues_published_page(nl):
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    published(nl)
    settings, sdir = load_settings(nl / "newsletter.toml")
    for slug in ("2020-09-cscp", "2021-03-local"):
        c = compose(nl / "issues" / f"{slug}.yaml", settings, sdir)
        email = lxml.html.fromstring(c.email_html_with_placeholders())
        view = [a.get("href") for a in email.iter("a") if "View this email in your browser" in a.text_content()]
        assert view == [settings.web_url(slug)] == [f"{BASE}/{slug}/"]
        rel = view[0][len(BASE) + 1:]
        target = nl / "site" / unquote(rel) / "index.html"
        assert target.is_file()
        assert lxml.html.fromstring(target.read_bytes()).findtext(".//title") == c.subject.fill(
            c.filler().defaults())


def test_drafts_and_future_issues_left_out_unless_drafts(nl):
    result = published(nl)
    assert "left out issues/2021-01-draft.yaml (draft: true" in result.stdout
    assert "left out issues/2099-future.yaml (dated " in result.stdout
    text = (nl / "site" / "feed.xml").read_text(encoding="utf-8")
    assert "A draft" not in text and "From the future" not in text

    result = published(nl, "--drafts")
    assert "left out" not in result.stdout
    assert (nl / "site" / "2021-01-draft" / "index.html").is_file()
    assert (nl / "site" / "2099-future" / "index.html").is_file()
    items = doc(nl / "site" / "index.html").cssselect("ol.issues li")
    assert [li.cssselect("a")[0].get("href") for li in items] == [
        "2099-future/index.html", "2021-03-local/index.html", "2021-01-draft/index.html", "2020-09-cscp/index.html"]
    assert [bool(li.cssselect(".draft")) for li in items] == [False, False, True, False]

    # Without --drafts again, their pages go.
    result = published(nl)
    assert not (nl / "site" / "2021-01-draft").exists() and not (nl / "site" / "2099-future").exists()
    assert "removed site/2021-01-draft/index.html" in result.stdout


def test_rebuild_rewrites_nothing_when_nothing_changed(nl):
    published(nl)
    before = snapshot(nl / "site")
    result = published(nl)
    assert "wrote" not in result.stdout and "removed" not in result.stdout
    assert "unchanged: 5 file(s)" in result.stdout  # 2 pages, 1 image, index, feed
    assert snapshot(nl / "site") == before


def test_rebuild_after_an_edit_rewrites_only_what_changed(nl):
    published(nl)
    before = snapshot(nl / "site")
    path = nl / "issues" / "2020-09-cscp.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("County lines", "County lines (updated)"),
                    encoding="utf-8")
    result = published(nl)
    after = snapshot(nl / "site")
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"2020-09-cscp/index.html"}, result.stdout
    assert result.stdout.count("wrote ") == 1


def test_deleting_an_issue_removes_its_page_and_images_but_not_files_publish_did_not_write(nl):
    published(nl)
    site = nl / "site"
    (site / "CNAME").write_text("news.example.org\n")
    (site / "2020-09-cscp" / "notes.txt").write_text("mine\n")
    (nl / "issues" / "2021-03-local.yaml").unlink()
    (nl / "issues" / "2020-09-cscp.yaml").unlink()
    result = published(nl)
    assert not (site / "2021-03-local").exists()  # page, image and the emptied folders
    assert "removed site/2021-03-local/index.html" in result.stdout
    assert "removed site/2021-03-local/images/pic one.png" in result.stdout
    assert not (site / "2020-09-cscp" / "index.html").exists()
    assert (site / "2020-09-cscp" / "notes.txt").read_text() == "mine\n"
    assert (site / "CNAME").read_text() == "news.example.org\n"
    assert doc(site / "index.html").cssselect("ol.issues li") == []
    assert ET.parse(site / "feed.xml").getroot().findall(f"{ATOM}entry") == []
    assert "published 0 issues" in result.stdout


def test_a_file_publish_did_not_write_is_never_overwritten(nl):
    site = nl / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>my own home page</p>")
    result = publish(nl)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "exists and was not written by newsletter publish" in lines[0]
    assert "site/index.html" in lines[0]
    assert (site / "index.html").read_text() == "<p>my own home page</p>"


# ------------------------------------------------------------------------------------------------
# local images


def test_local_image_copied_referenced_absolutely_in_email_relatively_in_site(nl):
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    published(nl)
    copy = nl / "site" / "2021-03-local" / "images" / "pic one.png"
    assert copy.read_bytes() == (nl / "issues" / "images" / "pic one.png").read_bytes()

    settings, sdir = load_settings(nl / "newsletter.toml")
    c = compose(nl / "issues" / "2021-03-local.yaml", settings, sdir)
    url = f"{BASE}/2021-03-local/images/pic%20one.png"
    logo = settings.brand.logo_url  # the example's header logo comes first
    assert [i.get("src") for i in lxml.html.fromstring(c.email_html_with_placeholders()).iter("img")] == [logo, url]
    assert [i.get("src") for i in lxml.html.fromstring(c.web_html).iter("img")] == [logo, url]
    # The URL the email uses is where publish put the file.
    assert (nl / "site" / unquote(url[len(BASE) + 1:])).read_bytes() == copy.read_bytes()

    page = nl / "site" / "2021-03-local" / "index.html"
    srcs = [i.get("src") for i in doc(page).iter("img")]
    assert srcs == [logo, "images/pic%20one.png"]
    resolved = urljoin(page.as_uri(), srcs[1])
    assert Path(unquote(urlsplit(resolved).path)).read_bytes() == copy.read_bytes()


def test_a_changed_image_is_copied_again_an_unchanged_one_is_not(nl):
    published(nl)
    copy = nl / "site" / "2021-03-local" / "images" / "pic one.png"
    stamp = copy.stat().st_mtime_ns
    assert "wrote" not in published(nl).stdout
    assert copy.stat().st_mtime_ns == stamp
    (nl / "issues" / "images" / "pic one.png").write_bytes(png(4, 4))
    result = published(nl)
    assert result.stdout.count("wrote ") == 1 and "wrote site/2021-03-local/images/pic one.png" in result.stdout
    assert copy.read_bytes() == png(4, 4)


@pytest.mark.parametrize("command", ["compose", "publish"])
def test_a_missing_local_image_is_one_clean_error_naming_file_line_field_and_path(nl, command):
    (nl / "issues" / "images" / "pic one.png").unlink()
    issue = nl / "issues" / "2021-03-local.yaml"
    args = ["compose", str(issue), "--out", str(nl / "out")] if command == "compose" else ["publish"]
    result = runner.invoke(app, [*args, "--config", str(nl / "newsletter.toml")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    src_line = LOCAL.splitlines().index("      src: images/pic one.png") + 1
    assert line.startswith(f"error: {issue}:{src_line}: sections[0].image.src: image file not found: "), line
    assert str(nl / "issues" / "images" / "pic one.png") in line
    assert not (nl / "out").exists()


@pytest.mark.parametrize("src, ok", [
    ("images/photo.png", "images/photo.png"),
    ("./photo.png", "photo.png"),
    ("images/../photo.png", "photo.png"),
    ("my photo.jpg", "my photo.jpg"),
    ("https://example.org/a.png", "https://example.org/a.png"),
    ("../photo.png", None),
    ("images/../../photo.png", None),
    ("/etc/passwd", None),
    ("~/photo.png", None),
    ("images\\photo.png", None),
    ("C:/photo.png", None),
    ("javascript:alert(1)", None),
    ("data:image/png;base64,AAAA", None),
    ("file:///etc/passwd", None),
    ("//example.org/a.png", None),
    ("images/", None),
    (".", None),
    ("{{ name }}.png", None),
])
def test_image_src_accepts_http_or_a_path_inside_the_issue_folder(src, ok):
    from pydantic import ValidationError

    from newsletter_mailer.schema import Image

    if ok is None:
        with pytest.raises(ValidationError):
            Image(src=src, alt="x")
    else:
        assert Image(src=src, alt="x").src == ok


def test_an_issue_file_name_that_cannot_be_a_web_address_is_refused(nl):
    shutil.copy(nl / "issues" / "2021-01-draft.yaml", nl / "issues" / "my issue.yaml")
    result = publish(nl)
    assert result.exit_code == 2
    assert "my issue.yaml" in result.stderr and "rename the file" in result.stderr


# ------------------------------------------------------------------------------------------------
# a real browser


def test_browser_index_renders_and_every_link_resolves_inside_the_site(nl):
    from tests.helpers.browser import open_page

    published(nl)
    site = (nl / "site").resolve()
    index = site / "index.html"
    with open_page(index, 800) as page:
        assert page.title() == "CSCP Newsletter"
        assert page.locator("h1").inner_text() == "CSCP Newsletter"
        items = page.locator("ol.issues li")
        assert items.count() == 2
        box = items.first.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 30
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => [e.getAttribute('href'), e.href])")
    assert {h for h, _ in hrefs} == {"2021-03-local/index.html", "2020-09-cscp/index.html", "feed.xml"}
    for raw, absolute in hrefs:
        assert not urlsplit(raw).scheme, raw  # relative inside the site
        target = Path(unquote(urlsplit(absolute).path))
        assert target.is_file() and target.resolve().is_relative_to(site), absolute
        if target.suffix != ".html":
            continue
        with open_page(absolute, 640) as page:
            assert page.title()
            more = page.locator("a", has_text="More issues")
            back = more.evaluate("a => a.href")
            assert Path(unquote(urlsplit(back).path)) == index
            imgs = page.eval_on_selector_all(
                "img", "els => els.filter(i => !/^https?:/.test(i.getAttribute('src'))).map(i => i.naturalWidth)")
            assert all(w > 0 for w in imgs), imgs  # local images load from the site folder
            if "local" in raw:
                assert imgs == [3]
            more.click()
            page.wait_for_load_state()
            assert page.title() == "CSCP Newsletter"


# ------------------------------------------------------------------------------------------------
# local images never lead outside the issue's folder (issue 10.3)

SECRET = b"root:x:0:0:secret outside the issue folder\n"


def plant(nl: Path, kind: str) -> None:
    """Make images/pic one.png lead to a file outside issues/ (which holds the issue file)."""
    outside = nl / "outside"
    outside.mkdir()
    (outside / "pic one.png").write_bytes(SECRET)
    images = nl / "issues" / "images"
    if kind == "linked file":
        (images / "pic one.png").unlink()
        (images / "pic one.png").symlink_to(outside / "pic one.png")
    else:
        shutil.rmtree(images)
        images.symlink_to(outside, target_is_directory=True)


@pytest.mark.parametrize("command", ["compose", "check", "publish"])
@pytest.mark.parametrize("kind", ["linked file", "under a linked folder"])
def test_an_image_leading_outside_the_issue_folder_is_refused(nl, kind, command):
    plant(nl, kind)
    issue = nl / "issues" / "2021-03-local.yaml"
    args = {"compose": ["compose", str(issue), "--out", str(nl / "out")], "check": ["check", str(issue)],
            "publish": ["publish", "--out", str(nl / "site")]}[command]
    result = runner.invoke(app, [*args, "--config", str(nl / "newsletter.toml")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    src_line = LOCAL.splitlines().index("      src: images/pic one.png") + 1
    assert lines[0].startswith(f"error: {issue}:{src_line}: sections[0].image.src: the image leads outside"), lines[0]
    assert "copy the image itself into" in lines[0]
    assert not (nl / "out").exists()
    assert not [p for p in (nl / "site").rglob("*") if p.is_file() and p.read_bytes() == SECRET]


def test_an_image_linked_inside_the_issue_folder_is_still_published(nl):
    """The rule is where the real file is, not whether a link is involved."""
    images = nl / "issues" / "images"
    (images / "pic one.png").rename(images / "real.png")
    (images / "pic one.png").symlink_to("real.png")
    published(nl)
    copy = nl / "site" / "2021-03-local" / "images" / "pic one.png"
    assert not copy.is_symlink() and copy.read_bytes() == png()


def test_an_image_swapped_for_a_link_after_the_check_is_not_copied(nl, monkeypatch):
    """publish reads the image again from its real path, checked again at that moment."""
    from newsletter_mailer import media

    checked = media.check_local_images

    def check_then_swap(issue, issue_path):
        checked(issue, issue_path)
        if issue_path.name == "2021-03-local.yaml" and not (nl / "outside").exists():
            plant(nl, "linked file")

    monkeypatch.setattr("newsletter_mailer.compose.check_local_images", check_then_swap)
    result = publish(nl)
    assert result.exit_code == 2, result.output
    assert "the image leads outside" in result.stderr
    assert not (nl / "site" / "2021-03-local" / "images" / "pic one.png").exists()


@pytest.mark.parametrize("src", ["../outside/pic one.png", "images/../../outside/pic one.png",
                                 "/etc/passwd"])
@pytest.mark.parametrize("command", ["compose", "publish"])
def test_escaping_and_absolute_image_paths_are_refused(nl, src, command):
    (nl / "outside").mkdir()
    (nl / "outside" / "pic one.png").write_bytes(SECRET)
    issue = nl / "issues" / "2021-03-local.yaml"
    issue.write_text(LOCAL.replace("src: images/pic one.png", f"src: '{src}'"), encoding="utf-8")
    args = ["compose", str(issue), "--out", str(nl / "out")] if command == "compose" else ["publish", "--out", str(nl / "site")]
    result = runner.invoke(app, [*args, "--config", str(nl / "newsletter.toml")])
    assert result.exit_code == 2, result.output
    assert "sections.0.image.src" in result.stderr or "sections[0].image.src" in result.stderr, result.stderr
    assert not (nl / "out").exists() and not (nl / "site").exists()


def test_media_inside_refuses_each_way_out(tmp_path):
    """The one rule (media.inside) on its own, for paths the schema would refuse too."""
    from newsletter_mailer import media

    issue = tmp_path / "issues" / "a.yaml"
    (tmp_path / "issues" / "in").mkdir(parents=True)
    (tmp_path / "issues" / "in" / "ok.png").write_bytes(b"ok")
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "issues" / "link.png").symlink_to(tmp_path / "secret")
    assert media.inside(issue, Path("in/ok.png")) == (tmp_path / "issues" / "in" / "ok.png").resolve()
    for way_out in ["../secret", "in/../../secret", str(tmp_path / "secret"), "link.png", "."]:
        assert media.inside(issue, Path(way_out)) is None, way_out
        with pytest.raises(NewsletterError):
            media.read_image(issue, Path(way_out))
