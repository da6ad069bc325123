"""YAML aliases that stand for more than a file should hold: refused before anything copies them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.sourcefile import YamlDoc

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEAD = "subject: Hi\ndate: 2020-09-01\n"


def nested(levels: int = 8, fan: int = 10, leaf: str = "x" * 100, use: str = "sections: *{last}\n") -> str:
    """A section list whose aliases nest: `levels` levels of `fan` copies, each section `leaf`.

    The default is 10**8 sections of 100 characters: 10 GB written out, from a 700-byte file.
    """
    lines = [f"s0: &s0 {{heading: h, body: \"{leaf}\"}}"]
    for i in range(1, levels + 1):
        lines.append(f"s{i}: &s{i} [" + ", ".join([f"*s{i - 1}"] * fan) + "]")
    return HEAD + "\n".join(lines) + "\n" + use.format(last=f"s{levels}")


def merges(levels: int = 9, fan: int = 9) -> str:
    """Merge keys (<<) copy the merged pairs while constructing: the same bomb in mapping form."""
    lines = ["m0: &m0 {" + ", ".join(f"k{i}: \"{'y' * 50}\"" for i in range(fan)) + "}"]
    for i in range(1, levels + 1):
        lines.append(f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * fan) + f"], n{i}: 1}}")
    return HEAD + "\n".join(lines) + "\nsections: [{heading: h, body: b}]\n"


BOMBS = {"nested lists": nested(), "merge keys": merges(), 
         "pure-Python loader": nested(leaf="x\t" * 50)}  # a tab: libyaml is not used


@pytest.mark.parametrize("text", BOMBS.values(), ids=BOMBS.keys())
def test_an_alias_bomb_is_one_error_naming_the_file(tmp_path: Path, text: str):
    path = tmp_path / "bomb.yaml"
    with pytest.raises(NewsletterError) as info:
        YamlDoc(path, text)
    assert info.value.path == str(path) and "aliases (*name) expand this file" in info.value.format()


def test_a_document_that_contains_itself_is_refused(tmp_path: Path):
    path = tmp_path / "loop.yaml"
    for text in ("subject: &a [*a]\n", "a: &a {k: [1, *a]}\n"):
        with pytest.raises(NewsletterError, match="refers to the list or mapping it is in"):
            YamlDoc(path, text)


def test_shared_aliases_below_the_limit_are_fine(tmp_path: Path):
    doc = YamlDoc(tmp_path / "ok.yaml", nested(levels=3) + "more: [*s3, *s3]\n")
    assert len(doc.data["sections"]) == 10 and doc.data["more"][1][9][9][9]["body"] == "x" * 100


def test_the_cli_refuses_a_100_mb_bomb_in_little_memory(newsletter_dir: Path):
    """exit 2, one line naming the file, inside a 400 MB address-space limit: the process never
    built the expansion (a child's max RSS is no measure here: Linux carries the parent's
    high-water mark across fork and exec, so it depends on how big pytest has grown)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))

    (newsletter_dir / "issues" / "bomb.yaml").write_text(nested(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("NEWSLETTER_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "newsletter_mailer", "check", "issues/bomb.yaml"],
                          cwd=newsletter_dir, env=env, capture_output=True, preexec_fn=limit, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: issues/bomb.yaml:") and "expand" in lines[0]
