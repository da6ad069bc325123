"""DKIM signing: SMTP sends with rsa-2048 signatures against the same send unsigned, and the cost of one signature.

* send: `newsletter send --provider smtp --yes` to 2,000 through a local aiosmtpd sink in its own
  process (bench_smtp.py's), as a whole process, with [delivery.dkim] (rsa-2048) and without;
* per message: `dkim_signing.Signer` over the example's built messages in-process (rsa-2048 and
  ed25519), against building the message itself.

python benchmarks/bench_dkim.py [--quick] [--json FILE]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_ISSUE, EXAMPLE_SETTINGS, Row, child_env, cli, median, python, report, run_process, \
    venv_python, write_subscribers
from bench_smtp import SECRET, SinkProcess, prepared


def signed_config(folder: Path, key: Path) -> Path:
    """The example's settings plus [delivery.dkim] with key."""
    text = EXAMPLE_SETTINGS.read_text(encoding="utf-8")
    config = folder / "newsletter.toml"
    config.write_text(text + f'\n[delivery.dkim]\ndomain = "example.org"\nselector = "bench"\nkey_file = "{key}"\n',
                      encoding="utf-8")
    for sub in ("templates", "images", "issues"):  # what the example's settings find next to them
        if (EXAMPLE_SETTINGS.parent / sub).exists():
            (folder / sub).symlink_to(EXAMPLE_SETTINGS.parent / sub)
    return config


def per_message(messages: list[bytes], algorithm: str, repeat: int) -> float:
    """Median seconds to sign one message."""
    from newsletter_mailer.dkim_signing import Signer, keygen
    from newsletter_mailer.settings import DkimSettings

    sign = Signer(DkimSettings(domain="example.org", selector="bench"), keygen(algorithm)[1])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for m in messages:
            sign(m)
        times.append((time.perf_counter() - t0) / len(messages))
    return median(times)


def main() -> None:
    args = cli(__doc__.splitlines()[0])
    n, repeat = (400, 2) if args.quick else (2000, 3)
    venv_py = venv_python()
    times: dict[str, list[float]] = {"plain": [], "signed": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from newsletter_mailer.dkim_signing import keygen

        key = tmp / "bench.pem"
        key.write_bytes(keygen("rsa")[0])
        key.chmod(0o600)
        (tmp / "nl").mkdir()
        configs = {"plain": EXAMPLE_SETTINGS, "signed": signed_config(tmp / "nl", key)}
        subs = write_subscribers(tmp / "subscribers.csv", n)
        for _ in range(repeat):
            for kind, config in configs.items():  # interleaved: a slow minute hurts both alike
                sink = SinkProcess(venv_py)
                env = child_env(NEWSLETTER_SECRET=SECRET, SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port),
                                SMTP_SECURITY="none")
                cmd = [python(), "-m", "newsletter_mailer", "send", str(EXAMPLE_ISSUE), "--list", str(subs),
                       "--provider", "smtp", "--state", str(tmp / "state"), "--config", str(config), "--yes"]
                try:
                    times[kind].append(run_process(cmd, env=env))
                finally:
                    got = sink.stop()
                assert got == n, f"the sink got {got} messages ({kind}), expected {n}"
                shutil.rmtree(tmp / "state")
        p, recipients = prepared(subs, tmp / "prep")
        sample = recipients[:200 if args.quick else 500]
        t0 = time.perf_counter()
        messages = [p.provider.ctx.messages.build(r.email, r.name, r.values)[1] for r in sample]
        build = (time.perf_counter() - t0) / len(sample)
        cost = {alg: per_message(messages, alg, repeat) for alg in ("rsa", "ed25519")}

    plain, signed = n / median(times["plain"]), n / median(times["signed"])
    size = len(messages[0])
    rows = [
        Row(f"SMTP: `newsletter send` to {n:,} with rsa-2048 DKIM signing vs unsigned (whole process, same sink)",
            signed, "messages/s", floor=plain, floor_label="unsigned", goal="≥ 0.7× unsigned",
            met=signed / plain >= 0.7,
            note=f"signed {median(times['signed']):.1f} s, unsigned {median(times['plain']):.1f} s"),
        Row(f"DKIM: one rsa-2048 signature (dkimpy, relaxed/simple) of a {size:,}-byte message, in-process",
            cost["rsa"] * 1e6, "µs", floor=build * 1e6, floor_label="building the message",
            note=f"ed25519: {cost['ed25519'] * 1e6:,.0f} µs"),
    ]
    report(rows, args)


if __name__ == "__main__":
    main()
