"""Shared helpers for the benchmark scripts: paths, timing, child processes, result rows.

Every script runs on its own (`python benchmarks/bench_x.py [--quick]`), prints a small table,
and with `--json FILE` also writes its rows for run.py, which collects them into RESULTS.md.
The package is imported from this checkout's src/ (whatever is installed), and child processes
get the same PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SRC = ROOT / "src"
EXAMPLE_ISSUE = ROOT / "issues" / "2020-09-cscp.yaml"
EXAMPLE_SETTINGS = ROOT / "newsletter.toml"
NODE_DIR = BENCH / ".node"
VENV = BENCH / ".venv-mailmerge"

if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def python() -> str:
    """The interpreter itself (not a shim such as pyenv's, which adds its own start-up)."""
    return os.path.realpath(sys.executable)


@dataclass
class Row:
    measure: str
    ours: float
    unit: str
    floor: float | None = None
    floor_label: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.floor in (None, 0):
            return None
        return self.ours / self.floor


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def timed(fn, repeat: int) -> list[float]:
    """Wall-clock seconds of each of `repeat` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_process(cmd: list[str], *, env=None, cwd=None, timeout: float = 900) -> float:
    """Wall seconds of one child process (output discarded); raises if it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr.decode()[-2000:]}")
    return wall


def measure_process(cmd: list[str], *, env=None, cwd=None, timeout: float = 900) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of one child, measured by a wrapper process whose
    only child it is: getrusage(RUSAGE_CHILDREN) there is exactly that child's peak."""
    wrapper = ("import resource,subprocess,sys,time\n"
               "t=time.perf_counter(); p=subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
               "w=time.perf_counter()-t\n"
               "sys.stdout.buffer.write(p.stdout)\n"
               "print(f'@@ {w} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {p.returncode}')\n")
    p = subprocess.run([python(), "-c", wrapper, *map(str, cmd)], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode()
    last = out.rstrip().splitlines()[-1]
    _, wall, rss, rc = last.split()
    if rc != "0":
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({rc}):\n{p.stderr.decode()[-2000:]}")
    return float(wall), int(rss) / 1024, out[: out.rfind("@@ ")]


def interleaved(fns: dict[str, object], repeat: int) -> dict[str, list[float]]:
    """Run the competitors in turn (A B A B …) so a busy machine slows all of them alike."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def compile_src() -> None:
    """Byte-compile src/ as pip does when it installs the wheel, so child processes measure the
    installed state. (An editable checkout under PYTHONDONTWRITEBYTECODE=1, as on the project's
    machines, would otherwise recompile every module from source in every process.)"""
    import compileall

    compileall.compile_dir(str(SRC), quiet=1)


def cli(description: str) -> argparse.Namespace:
    compile_src()
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--json", type=Path, help="write the result rows here (for run.py)")
    return ap.parse_args()


def report(rows: list[Row], args: argparse.Namespace) -> None:
    for r in rows:
        ratio = f"{r.ratio:.2f}x {r.floor_label}" if r.ratio is not None else ""
        goal = f"  goal {r.goal}: {'met' if r.met else 'MISSED'}" if r.goal else ""
        print(f"{r.measure}: {fmt(r.ours)} {r.unit}"
              + (f"  vs {fmt(r.floor)} {r.unit} ({ratio})" if r.floor is not None else "") + goal
              + (f"  [{r.note}]" if r.note else ""))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in rows], indent=1))


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def personalised_issue(folder: Path) -> Path:
    """The example issue with merge fields in the subject and the body (name, email, a column).

    The example greets the reader by name; a personalised issue adds a column and the address,
    the per-recipient worst case the README describes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "issues").mkdir(exist_ok=True)
    (folder / "newsletter.toml").write_text(EXAMPLE_SETTINGS.read_text(encoding="utf-8"), encoding="utf-8")
    text = EXAMPLE_ISSUE.read_text(encoding="utf-8")
    text = text.replace('subject: "CSCP Newsletter - September 2020"',
                        "subject: \"{{ name | default('Colleague') }}, the CSCP Newsletter - September 2020\"", 1)
    text = text.replace('intro: |\n  Dear {{ name | default("colleague") }},\n',
                        'intro: |\n'
                        '  Dear {{ name | default("colleague") }}, this month for '
                        '{{ school_year | default("all year groups") }}: the campaign, briefings and news.\n'
                        '  This copy was sent to {{ email }}.\n', 1)
    if "This copy was sent to" not in text:
        raise RuntimeError("the example issue's intro changed: update personalised_issue()")
    issue = folder / "issues" / EXAMPLE_ISSUE.name
    issue.write_text(text, encoding="utf-8")
    return issue


def write_subscribers(path: Path, n: int, *, start: int = 0) -> Path:
    """A subscriber CSV of n distinct, valid rows (a few merge columns, some tags)."""
    import csv

    years = ("Year 7", "Year 8", "Year 9", "", "Year 10")
    tags = ("parents", "schools;parents", "practitioners", "")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Email", "Name", "Status", "Tags", "School Year"])
        for i in range(start, start + n):
            w.writerow([f"reader.{i}@example{i % 50}.org", f"Reader {i}", "subscribed" if i % 3 else "",
                        tags[i % 4], years[i % 5]])
    return path


VENV_PACKAGES = ("mailmerge==2.3.0", "aiosmtpd>=1.4,<2")


def venv_python() -> Path:
    """benchmarks/.venv-mailmerge/bin/python with mailmerge and aiosmtpd (created on first use),
    so what we compare against never touches the project's environment."""
    exe = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if exe.exists() and marker.exists() and marker.read_text() == "\n".join(VENV_PACKAGES):
        return exe
    if not exe.exists():
        subprocess.run([python(), "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *VENV_PACKAGES],
                   check=True)
    marker.write_text("\n".join(VENV_PACKAGES))
    return exe


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
