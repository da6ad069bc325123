"""Run every benchmark and write the figures into benchmarks/RESULTS.md.

python benchmarks/run.py [--quick] [--only NAME ...] [--no-write]

Each bench_*.py runs in its own process (so one's imports and caches do not help another),
then watch_rebuild.py if it is there. The table between the markers in RESULTS.md is replaced;
the text around it (what bounds each figure) is kept. --quick uses smaller sizes (and does
not overwrite RESULTS.md unless --write is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import child_env, fmt, python  # noqa: E402

ORDER = ("startup", "compose", "recipient", "outbox", "smtp", "postfix", "dkim", "subscribers", "sendgrid", "sync", "web", "clicks", "store", "inbox", "state", "variants", "sequences")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = ""
    if shutil.which("node"):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return (f"{os.cpu_count()} cores ({cpu}){mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}" + (f"; Node {node}" if node else "")
            + f"; load average at start {load}")


def run_bench(name: str, quick: bool) -> tuple[list[dict], str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [python(), str(BENCH / f"bench_{name}.py"), "--json", str(out)] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    took = time.perf_counter() - t0
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        out.unlink(missing_ok=True)
        return [{"measure": f"bench_{name}.py failed (exit {p.returncode})", "ours": None, "unit": "",
                 "floor": None, "floor_label": "", "goal": "", "met": False,
                 "note": (p.stderr.strip().splitlines() or [""])[-1][:200], "ratio": None}], p.stdout, took
    rows = json.loads(out.read_text())
    out.unlink()
    return rows, p.stdout, took


def run_watch(quick: bool) -> tuple[list[dict], str, float]:
    script = BENCH / "watch_rebuild.py"
    t0 = time.perf_counter()
    p = subprocess.run([python(), str(script), "10" if quick else "30"], env=child_env(), capture_output=True,
                       text=True, cwd=tempfile.gettempdir())
    took = time.perf_counter() - t0
    sys.stdout.write(p.stdout)
    m = re.search(r"warm rebuild \(N=\d+\): median ([\d.]+) ms", p.stdout)
    if p.returncode != 0 or not m:
        return [{"measure": "watch_rebuild.py failed", "ours": None, "unit": "", "floor": None, "floor_label": "",
                 "goal": "", "met": False, "note": (p.stderr.strip().splitlines() or [""])[-1][:200],
                 "ratio": None}], p.stdout, took
    cold = re.search(r"cold build: ([\d.]+) ms", p.stdout)
    return [{"measure": "watch server: warm rebuild after a save (benchmarks/watch_rebuild.py)",
             "ours": float(m.group(1)), "unit": "ms", "floor": None, "floor_label": "", "goal": "", "met": None,
             "note": (f"cold build {cold.group(1)} ms; " if cold else "")
             + "compose + checks + build files + preview page", "ratio": None}], p.stdout, took


def table(rows: list[dict]) -> str:
    out = ["| measure | ours | floor / peer | ratio | goal | met? |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        unit = r.get("unit") or ""
        ours = f"{fmt(r['ours'])} {unit}" if r.get("ours") is not None else "—"
        floor = f"{fmt(r['floor'])} {unit} ({r['floor_label']})" if r.get("floor") is not None else "—"
        ratio = f"{r['ratio']:.2f}×" if r.get("ratio") is not None else "—"
        met = "—" if r.get("met") is None else ("yes" if r["met"] else "**no**")
        measure = r["measure"] + (f" — {r['note']}" if r.get("note") else "")
        out.append(f"| {measure} | {ours} | {floor} | {ratio} | {r.get('goal') or '—'} | {met} |")
    return "\n".join(out)


def write_results(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{section}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (a minute or two)")
    ap.add_argument("--only", nargs="+", choices=ORDER + ("watch",), help="run only these")
    ap.add_argument("--write", action="store_true", help="write RESULTS.md even with --quick")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()
    names = args.only or list(ORDER) + ["watch"]
    started = dt.datetime.now(dt.timezone.utc)
    info = machine()
    print(f"machine: {info}\n", flush=True)
    rows: list[dict] = []
    timings = []
    for name in names:
        print(f"== {name}", flush=True)
        if name == "watch":
            if not (BENCH / "watch_rebuild.py").exists():
                continue
            got, _, took = run_watch(args.quick)
        else:
            got, _, took = run_bench(name, args.quick)
        rows.extend(got)
        timings.append(f"{name} {took:.0f} s")
        print(flush=True)
    total = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    section = (f"Run {started:%Y-%m-%d %H:%M} UTC{' (--quick: small sizes)' if args.quick else ''}, "
               f"`python benchmarks/run.py{' --quick' if args.quick else ''}`"
               f"{' --only ' + ' '.join(args.only) if args.only else ''} in {total / 60:.1f} min "
               f"({', '.join(timings)}).\n\nMachine: {info}.\n\n{table(rows)}")
    write = not args.no_write and (not args.quick or args.write)
    if write:
        write_results(BENCH / "RESULTS.md", section)
        print(f"wrote {BENCH / 'RESULTS.md'}")
    missed = [r["measure"] for r in rows if r.get("met") is False]
    print(f"{len(rows)} figures, {len(missed)} goal(s) missed" + (": " + "; ".join(missed) if missed else ""))


if __name__ == "__main__":
    main()
