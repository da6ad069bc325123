"""`newsletter sequences run`, the command cron runs every minute: over 100,000 readers with
nothing due (whole process, SQLite and PostgreSQL: goal ≤ 1 s), and with 10,000 due (messages/s
against a plain `newsletter send` of the same step to the same 10,000, outbox on disk).

The sequence is three steps (the example issue's text); the readers are written straight into the
store (one transaction), all past step 1 an hour ago (nothing due) or just started (step 1 due).
PostgreSQL is bench_state.py's throwaway cluster with its own durability settings (fsync on).

python benchmarks/bench_sequences.py [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, ROOT, Row, child_env, cli, median, python, report, \
    run_process, write_subscribers
from bench_state import DurableCluster, fresh_database

sys.path.insert(0, str(ROOT))
from tests.helpers.postgres import bin_dir  # noqa: E402

from newsletter_mailer.state import State  # noqa: E402

SECRET = "nyBGLxNdygeKZjesJ_twKBIfmHQP_dEMIBN9sdJAvw4"
STEPS = (("1-hello", "0"), ("2-how-to-help", "3d"), ("3-training", "10d"))


def folder_with_sequence(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_SETTINGS, root / "newsletter.toml")
    (root / "sequences" / "welcome").mkdir(parents=True, exist_ok=True)
    text = EXAMPLE_ISSUE.read_text(encoding="utf-8")
    lines = ["start: confirmed", "steps:"]
    for slug, after in STEPS:
        (root / "sequences" / "welcome" / f"{slug}.yaml").write_text(text, encoding="utf-8")
        lines += [f"  - issue: sequences/welcome/{slug}.yaml", f"    after: {after}"]
    (root / "sequences" / "welcome.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for img in (EXAMPLE_ISSUE.parent).glob("images"):  # the example's local images, if any
        shutil.copytree(img, root / "sequences" / "welcome" / "images", dirs_exist_ok=True)
    return root


def fill(state: State, n: int, *, due: bool) -> None:
    """n readers: past step 1 an hour ago (nothing due for two days) or started a minute ago."""
    now = int(time.time())
    store = state.audience()
    try:
        with store.transaction():
            if due:
                rows = [("welcome", f"reader{i:07d}@example.org", now - 60, None, "", None) for i in range(n)]
            else:
                rows = [("welcome", f"reader{i:07d}@example.org", now - 3600, "1-hello", " 1-hello", now - 3600)
                        for i in range(n)]
            store.db.executemany("INSERT INTO sequence_readers (sequence, email, started_at, last_step, passed, "
                                 "last_at) VALUES (?,?,?,?,?,?)", rows)
    finally:
        store.close()


def in_process(folder: Path, env: dict[str, str], repeat: int) -> list[float]:
    """Runner.run() alone, settings loaded and modules imported: what a run costs `serve --sequences`."""
    from newsletter_mailer.sequences.run import Runner
    from newsletter_mailer.settings import load_settings

    settings, settings_dir = load_settings(folder / "newsletter.toml")
    runner = Runner(settings, settings_dir, State(folder / ".newsletter", env.get("NEWSLETTER_DATABASE_URL")), env)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = runner.run()
        out.append(time.perf_counter() - t0)
        assert not report.steps and not report.errors, report
    return out


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n_idle, n_due, repeat = (10_000, 1_000, 3) if args.quick else (100_000, 10_000, 5)
    env = child_env(NEWSLETTER_SECRET=SECRET)
    env.pop("NEWSLETTER_DATABASE_URL", None)
    rows: list[Row] = []
    binaries = bin_dir()
    cluster = DurableCluster(binaries).start() if binaries else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            idle: dict[str, list[float]] = {}
            inner: dict[str, float] = {}
            for backend in ("sqlite", "postgres") if cluster else ("sqlite",):
                folder = folder_with_sequence(tmp / f"idle-{backend}")
                run_env = dict(env, NEWSLETTER_DATABASE_URL=fresh_database(cluster, env)) \
                    if backend == "postgres" else env
                fill(State(folder / ".newsletter", run_env.get("NEWSLETTER_DATABASE_URL")), n_idle, due=False)
                cmd = [python(), "-m", "newsletter_mailer", "sequences", "run"]
                run_process(cmd, env=run_env, cwd=folder)  # warm-up
                idle[backend] = [run_process(cmd, env=run_env, cwd=folder) for _ in range(repeat)]
                assert not (folder / "outbox").exists(), "something was sent"
                inner[backend] = median(in_process(folder, run_env, repeat))
            start = [run_process([python(), "-m", "newsletter_mailer", "--help"], env=env) for _ in range(repeat)]
            for backend, times in idle.items():
                t = median(times)
                rows.append(Row(f"sequences: `newsletter sequences run` over {n_idle:,} readers, nothing due, whole "
                                f"process, {'PostgreSQL (local, fsync on)' if backend == 'postgres' else 'SQLite'}",
                                t, "s", floor=median(start), floor_label="`newsletter --help`",
                                goal="≤ 1 s (it runs every minute)", met=t <= 1.0,
                                note=f"the run itself (in-process: the query, every step's next due) "
                                     f"{inner[backend] * 1000:.0f} ms; the rest is Python's start and imports; runs "
                                     + ", ".join(f"{x:.2f}" for x in times) + " s"))

            def sequence_run() -> float:
                folder = folder_with_sequence(tmp / "due")
                fill(State(folder / ".newsletter"), n_due, due=True)
                os.sync()
                took = run_process([python(), "-m", "newsletter_mailer", "sequences", "run"], env=env, cwd=folder)
                files = sum(1 for _ in (folder / "outbox" / "1-hello").iterdir())
                assert files == n_due, f"{files} files, expected {n_due}"
                shutil.rmtree(folder)
                return took

            def plain_send() -> float:
                folder = folder_with_sequence(tmp / "plain")
                subs = write_subscribers(tmp / "plain.csv", n_due)
                os.sync()
                took = run_process([python(), "-m", "newsletter_mailer", "send", "sequences/welcome/1-hello.yaml",
                                    "--list", str(subs), "--provider", "outbox", "--yes"], env=env, cwd=folder)
                shutil.rmtree(folder)
                return took

            seq_t, send_t = [], []
            for rep in range(repeat):
                for fn, out in ((sequence_run, seq_t), (plain_send, send_t)) if rep % 2 == 0 else \
                        ((plain_send, send_t), (sequence_run, seq_t)):
                    out.append(fn())
            s, p = median(seq_t), median(send_t)
            rows.append(Row(f"sequences: `newsletter sequences run` with {n_due:,} readers due step 1, whole process, "
                            "outbox on disk, SQLite", n_due / s, "messages/s", floor=n_due / p,
                            floor_label="`newsletter send` of the same step to the same number",
                            note=f"{s:.1f} s against {p:.1f} s; runs " + ", ".join(f"{x:.1f}" for x in seq_t)
                                 + " s and " + ", ".join(f"{x:.1f}" for x in send_t) + " s"))
    finally:
        if cluster is not None:
            cluster.stop()
    report(rows, args)


if __name__ == "__main__":
    main()
