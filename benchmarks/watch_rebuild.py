"""How long `newsletter compose ISSUE --watch` takes to rebuild the example after an edit.

Plain script: python benchmarks/watch_rebuild.py [N]. Copies the example newsletter to a temporary
folder, does one cold build, then N warm rebuilds, each after a small edit of the issue (so the
build files really are rewritten), and prints the median and the spread in milliseconds, with the
compose steps' share. A rebuild is what the watch server does on a save: compose (load, render,
compile, inline), the checks, writing build/<slug>/*, and the served preview page.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(n: int = 30) -> None:
    from newsletter_mailer.watch import PreviewServer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(ROOT / "newsletter.toml", tmp / "newsletter.toml")
        (tmp / "issues").mkdir()
        issue = tmp / "issues" / "2020-09-cscp.yaml"
        original = (ROOT / "issues" / "2020-09-cscp.yaml").read_text(encoding="utf-8")
        issue.write_text(original, encoding="utf-8")
        os.chdir(tmp)
        server = PreviewServer(issue, tmp / "newsletter.toml", port=0, echo=lambda s: None)
        try:
            t0 = time.perf_counter()
            first = server.build()
            cold = (time.perf_counter() - t0) * 1000
            assert first.ok, first.message
            times, steps = [], {}
            for i in range(n):
                issue.write_text(original.replace("September 2020", f"September 2020 ({i})", 1), encoding="utf-8")
                t0 = time.perf_counter()
                b = server.build()
                times.append((time.perf_counter() - t0) * 1000)
                assert b.ok, b.message
            from newsletter_mailer.compose import compose
            from newsletter_mailer.settings import load_settings

            settings, sdir = load_settings(tmp / "newsletter.toml")
            for _ in range(10):
                for k, v in compose(issue, settings, sdir).timings.items():
                    steps.setdefault(k, []).append(v * 1000)
        finally:
            server.stop()
    print(f"cold build: {cold:.0f} ms")
    print(f"warm rebuild (N={n}): median {statistics.median(times):.1f} ms, "
          f"min {min(times):.1f}, max {max(times):.1f}")
    print("compose steps (median ms): " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in steps.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
