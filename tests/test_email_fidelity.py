"""The email as Outlook will draw it (issue 21), measured against official MJML.

The same MJML the project compiles (mjml-python) is compiled by the official `mjml` npm package
(.ci/package.json); the inlined email must keep each image's pixel `width`/`height` as official
MJML writes them (Outlook's Word engine sizes images from the attribute) and must not add Nu HTML
checker errors that official MJML's output does not have (premailer copying MJML's reset CSS into
every table). Skips without node, java or the packages, unless CI is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import lxml.html
import pytest

from newsletter_mailer import compose as compose_module
from newsletter_mailer.compose import compose
from newsletter_mailer.settings import load_settings
from tests.conftest import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT
from tests.test_web_page import LAYOUTS_ISSUE, _vnu

MJML_CLI = ROOT / ".ci" / "node_modules" / "mjml" / "bin" / "mjml"
NU_MARGIN = 1.10  # the email may have at most official MJML's Nu errors plus 10%


def _official_mjml() -> list[str]:
    node = shutil.which("node")
    if node and MJML_CLI.is_file():
        return [node, str(MJML_CLI)]
    reason = f"official MJML needs node and {MJML_CLI} (bash .ci/install-system.sh)"
    if os.environ.get("CI"):
        pytest.fail(reason + ": missing in CI")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """For each example issue: (the project's inlined email.html, official MJML's compile of the same MJML)."""
    mjml = _official_mjml()
    settings, sdir = load_settings(EXAMPLE_SETTINGS)
    out = tmp_path_factory.mktemp("fidelity")
    sources: list[str] = []
    real = compose_module.compile_mjml

    def spy(source: str, template: str) -> str:
        sources.append(source)
        return real(source, template)

    result = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(compose_module, "compile_mjml", spy)
    try:
        for name, issue in (("example", EXAMPLE_ISSUE), ("layouts", LAYOUTS_ISSUE)):
            ours = out / f"{name}.html"
            ours.write_text(compose(issue, settings, sdir).email_html_with_placeholders(), encoding="utf-8")
            src = out / f"{name}.mjml"
            src.write_text(sources[-1], encoding="utf-8")
            official = out / f"{name}.official.html"
            subprocess.run([*mjml, str(src), "-o", str(official), "--config.validationLevel=skip"],
                           check=True, capture_output=True, timeout=120)
            result[name] = (ours, official)
    finally:
        mp.undo()
    return result


def _images(path: Path) -> list[tuple[str, str | None, str | None]]:
    doc = lxml.html.fromstring(path.read_bytes())
    return [(img.get("src"), img.get("width"), img.get("height")) for img in doc.iter("img")]


def test_every_image_keeps_official_mjmls_pixel_width(pairs):
    for name, (ours, official) in pairs.items():
        mine, theirs = _images(ours), _images(official)
        assert len(mine) >= 3, (name, mine)
        assert mine == theirs, name
        assert all(w and w.isdigit() for _, w, _ in mine), (name, mine)


def test_the_inliner_adds_no_presentational_attributes(pairs):
    for name, (ours, official) in pairs.items():
        def attributes(path: Path) -> dict[str, int]:
            doc = lxml.html.fromstring(path.read_bytes())
            return {a: len(doc.xpath(f"//@{a}")) for a in ("width", "height", "align", "valign", "bgcolor")}
        assert attributes(ours) == attributes(official), name


def _nu_errors(paths: list[Path]) -> dict[str, list[str]]:
    run = subprocess.run([*_vnu(), "--errors-only", "--format", "json", *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    found: dict[str, list[str]] = {p.name: [] for p in paths}
    for m in json.loads(run.stderr or run.stdout)["messages"]:
        found[m["url"].rsplit("/", 1)[-1]].append(m["message"])
    return found


def test_no_more_nu_checker_errors_than_official_mjml_plus_ten_percent(pairs):
    errors = _nu_errors([p for pair in pairs.values() for p in pair])
    for name, (ours, official) in pairs.items():
        reference = len(errors[official.name])
        assert reference > 0, "the Nu checker found nothing in official MJML's output: is it checking?"
        assert len(errors[ours.name]) <= reference * NU_MARGIN, (name, reference, errors[ours.name])
