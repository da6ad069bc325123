"""Compose: the example issue end to end, in-process and as a whole process, against the official MJML CLI.

1. In-process, warm (as the watch server rebuilds): compose() of issues/2020-09-cscp.yaml —
   load + validate, render, compile (mjml-python), inline (premailer), text, web, split — median
   ms and each step's share (Composed.timings).
2. The first compose in a fresh process: imports included, and compose() alone.
3. `newsletter compose ISSUE` as a whole process (all files written, checks run) against the
   official MJML compiler (npm `mjml`, installed into benchmarks/.node/) compiling the same
   rendered MJML (written to a temp file) as a whole process, run in turn. Also the per-compile
   time of each compiler in-process.

python benchmarks/bench_compose.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (EXAMPLE_ISSUE, EXAMPLE_SETTINGS, NODE_DIR, Row, child_env, cli, interleaved, median,
                     python, report, run_process, timed)

MJML_VERSION = "mjml@5"

FIRST = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from newsletter_mailer.compose import compose
from newsletter_mailer.settings import load_settings
t1 = time.perf_counter()
settings, sdir = load_settings(Path(sys.argv[2]))
c = compose(Path(sys.argv[1]), settings, sdir)
t2 = time.perf_counter()
print(json.dumps({"total": t2 - t0, "compose": t2 - t1, "timings": c.timings}))
"""

NODE_COMPILE = r"""
const mjml = require(process.argv[2] + '/node_modules/mjml');
const src = require('fs').readFileSync(process.argv[3], 'utf8');
const f = mjml.default || mjml;
(async () => {
  let r = f(src); if (r && r.then) r = await r;
  const ts = [];
  for (let i = 0; i < Number(process.argv[4]); i++) {
    const t = process.hrtime.bigint(); let x = f(src); if (x && x.then) x = await x;
    ts.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  ts.sort((a, b) => a - b);
  console.log(JSON.stringify({median_ms: ts[Math.floor(ts.length / 2)], version: require(process.argv[2] + '/node_modules/mjml/package.json').version}));
})();
"""


def ensure_mjml_cli() -> Path | None:
    """The official MJML CLI in benchmarks/.node/ (npm install on first use); None without npm."""
    exe = NODE_DIR / "node_modules" / ".bin" / "mjml"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        print("npm/node not found: skipping the MJML CLI comparison", file=sys.stderr)
        return None
    subprocess.run([npm, "install", "--prefix", str(NODE_DIR), MJML_VERSION, "--no-audit", "--no-fund",
                    "--loglevel=error"], check=True, stdout=subprocess.DEVNULL)
    return exe if exe.exists() else None


def rendered_mjml(path: Path) -> str:
    """The example's MJML as compose renders it (the email, merge fields as tokens)."""
    from newsletter_mailer import render
    from newsletter_mailer.compose import UNSUBSCRIBE, load_issue
    from newsletter_mailer.mergefields import FieldTable
    from newsletter_mailer.schema import slug_of
    from newsletter_mailer.settings import load_settings

    settings, sdir = load_settings(EXAMPLE_SETTINGS)
    table = FieldTable()
    view = render.build_view(load_issue(EXAMPLE_ISSUE), settings, slug_of(EXAMPLE_ISSUE), table)
    text = render.render(tuple(render.search_path(sdir)), render.EMAIL_TEMPLATE, view, web=False,
                         unsubscribe_url=table.token(UNSUBSCRIBE))
    path.write_text(text, encoding="utf-8")
    return text


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    warm_n, first_n, proc_n = (10, 3, 5) if args.quick else (40, 7, 15)
    rows: list[Row] = []

    # 1. in-process, warm
    from newsletter_mailer.compose import compose
    from newsletter_mailer.settings import load_settings

    settings, sdir = load_settings(EXAMPLE_SETTINGS)
    for _ in range(3):
        compose(EXAMPLE_ISSUE, settings, sdir)
    steps: dict[str, list[float]] = {}
    totals = []
    for _ in range(warm_n):
        t0 = time.perf_counter()
        c = compose(EXAMPLE_ISSUE, settings, sdir)
        totals.append(time.perf_counter() - t0)
        for k, v in c.timings.items():
            steps.setdefault(k, []).append(v)
    warm = median(totals) * 1000
    shares = {k: median(v) * 1000 for k, v in steps.items()}
    share_text = ", ".join(f"{k} {v:.1f} ms ({100 * v / warm:.0f}%)" for k, v in shares.items())
    rows.append(Row("compose in-process, warm (example issue)", warm, "ms", goal="≤ 30 ms", met=warm <= 30,
                    note=share_text, extra={"steps_ms": shares}))

    # 2. first compose in a fresh process
    env = child_env()
    firsts = []
    for _ in range(first_n):
        out = subprocess.run([python(), "-c", FIRST, str(EXAMPLE_ISSUE), str(EXAMPLE_SETTINGS)], env=env,
                             capture_output=True, check=True, text=True).stdout
        firsts.append(json.loads(out))
    first_total = median([f["total"] for f in firsts]) * 1000
    first_compose = median([f["compose"] for f in firsts]) * 1000
    first_steps = {k: median([f["timings"][k] for f in firsts]) * 1000 for k in firsts[0]["timings"]}
    rows.append(Row("first compose in a fresh process (imports included)", first_total, "ms",
                    note=f"compose() alone {first_compose:.0f} ms: "
                         + ", ".join(f"{k} {v:.0f}" for k, v in first_steps.items()),
                    extra={"compose_ms": first_compose, "steps_ms": first_steps}))

    # 3. whole process against the official MJML CLI
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mjml_file = tmp / "email.mjml"
        rendered_mjml(mjml_file)
        exe = ensure_mjml_cli()
        ours = [python(), "-m", "newsletter_mailer", "compose", str(EXAMPLE_ISSUE), "--config",
                str(EXAMPLE_SETTINGS), "--out", str(tmp / "build")]
        run_process(ours, env=env)
        fns = {"ours": lambda: run_process(ours, env=env)}
        if exe is not None:
            theirs = [str(exe), str(mjml_file), "-o", str(tmp / "mjml.html")]
            run_process(theirs)
            fns["mjml"] = lambda: run_process(theirs)
        times = interleaved(fns, proc_n)
        ours_ms = median(times["ours"]) * 1000
        if exe is not None:
            node_ms = median(times["mjml"]) * 1000
            ratio = ours_ms / node_ms
            rows.append(Row("`newsletter compose` whole process vs the MJML CLI compiling the same MJML",
                            ours_ms, "ms", floor=node_ms, floor_label="MJML CLI (npm mjml, Node)",
                            goal="≤ 0.8× MJML CLI", met=ratio <= 0.8,
                            note="ours: load, validate, render, compile, inline, text, web, checks, 4 files"))
            node = subprocess.run(["node", "-e", NODE_COMPILE, str(NODE_DIR), str(mjml_file), "20"],
                                  capture_output=True, text=True)
            if node.returncode == 0:
                info = json.loads(node.stdout)
                from mjml import mjml2html

                src = mjml_file.read_text(encoding="utf-8")
                py_ms = median(timed(lambda: mjml2html(src, disable_comments=True), 20)) * 1000
                rows.append(Row("one MJML compile in-process: mjml-python vs npm mjml", py_ms, "ms",
                                floor=info["median_ms"], floor_label=f"npm mjml {info['version']} in Node"))
        else:
            rows.append(Row("`newsletter compose` whole process", ours_ms, "ms", note="MJML CLI not available"))
    report(rows, args)


if __name__ == "__main__":
    main()
