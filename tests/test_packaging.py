"""A plain `pip install .` must carry the built-in templates inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_wheel_ships_the_templates_and_entry_points(tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    [wheel] = tmp_path.glob("newsletter_mailer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    prefix = "newsletter_mailer/templates/"
    shipped = {n[len(prefix):] for n in names if n.startswith(prefix)}
    assert shipped == {p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.j2")}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "newsletter = newsletter_mailer.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
