"""Start-up: `newsletter --help` against a bare `python -c pass`, each a whole process, run in turn.

Also lists which heavy libraries `newsletter --help` imports (none should be: premailer, lxml,
sendgrid, mjml, jinja2, pydantic, email_validator and rich are imported inside the commands).
The interpreter is run directly (not through a shim such as pyenv's), with this checkout's src/.

python benchmarks/bench_startup.py [--quick] [--json FILE]
"""

from __future__ import annotations

import subprocess

from _common import Row, child_env, cli, interleaved, median, python, report, run_process

HEAVY = ("premailer", "lxml", "cssutils", "requests", "sendgrid", "python_http_client", "mjml", "jinja2",
         "pydantic", "email_validator", "rich", "markdown_it", "yaml")


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n = 10 if args.quick else 30
    env = child_env()
    bare = [python(), "-c", "pass"]
    ours = [python(), "-m", "newsletter_mailer", "--help"]
    run_process(ours, env=env)
    times = interleaved({"bare": lambda: run_process(bare, env=env), "ours": lambda: run_process(ours, env=env)}, n)
    probe = ("import sys, runpy\n"
             "sys.argv = ['newsletter', '--help']\n"
             "try:\n    runpy.run_module('newsletter_mailer', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    loaded = subprocess.run([python(), "-c", probe], env=env, capture_output=True, text=True).stderr.strip()
    loaded = loaded.splitlines()[-1] if loaded else ""
    b, o = median(times["bare"]) * 1000, median(times["ours"]) * 1000
    rows = [Row("`newsletter --help` whole process vs `python -c pass`", o, "ms", floor=b,
                floor_label="bare Python start-up", goal="≤ 8× bare Python", met=o / b <= 8,
                note="heavy libraries imported: " + (loaded or "none"))]
    report(rows, args)


if __name__ == "__main__":
    main()
