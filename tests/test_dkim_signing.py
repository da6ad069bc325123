"""DKIM signatures made by dkimpy, verified by another implementation: OpenDKIM's
`opendkim-testmsg`, fetching the public key from a real NSD serving example.org.

opendkim-testmsg asks the system resolver (libresolv: port 53 only), so NSD listens on port 53 of
a loopback address of its own, and each verification runs in a mount namespace (`unshare`) where
/etc/resolv.conf names that address: nothing outside the test sees either.
"""

from __future__ import annotations

import csv
import email
import email.policy
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.dkim_signing import keygen, parse_key, signer_for, txt_chunks
from newsletter_mailer.settings import DkimSettings
from tests.helpers import nsd
from tests.helpers.sinks import free_port
from tests.test_return_path import Envelopes

TESTMSG = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"
pytestmark = pytest.mark.skipif(
    not (nsd.available() and os.path.exists(TESTMSG) and shutil.which("unshare") and os.geteuid() == 0),
    reason="needs nsd, opendkim-tools (.ci/install-system.sh), unshare and root")
runner = CliRunner()
SECRET = "UIdcif0QDhzX8JLcEAXZCGaPqAyAqiMInnFXjH69nrU"
# Hostile readers among good ones: quotes, encoded-word look-alikes, non-ASCII, a long name, a
# CRLF that must never become a header (refused, so never signed nor sent).
READERS = [("ann@example.com", "Ann"), ("bob+news@example.net", 'Bob "the builder", Jr.'),
           ("zoe@example.com", "Zoë Ångström"), ("eve@example.com", "=?utf-8?q?Bcc=3A_x=40evil.example?="),
           ("long@example.com", "L" * 150), ("cr@example.com", "Carl\r\nBcc: x@evil.example"),
           ("dan@example.com", "Dan")]
SIGNED = [a for a, _ in READERS if a != "cr@example.com"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dkimkeys")
    out = {}
    for algorithm in ("rsa", "ed25519"):
        pem, _ = keygen(algorithm)
        out[algorithm] = folder / f"{algorithm}.pem"
        out[algorithm].write_bytes(pem)
        out[algorithm].chmod(0o600)
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory, keys):
    """NSD on port 53 of a loopback address of its own, serving example.org's two selectors;
    yields the resolv.conf naming it."""
    folder = tmp_path_factory.mktemp("dkimdns")
    records = "\n".join(f"{alg}._domainkey IN TXT {txt_chunks(parse_key(p.read_bytes(), alg).record())}"
                        for alg, p in keys.items())
    for _ in range(5):
        ip = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
        try:
            server = nsd.start(folder / ip, {"example.org": records}, ip=ip, port=53)
            break
        except RuntimeError:
            continue
    else:
        pytest.fail("could not start nsd on a loopback address's port 53")
    resolv = folder / "resolv.conf"
    resolv.write_text(f"nameserver {ip}\noptions attempts:1 timeout:2\n", encoding="utf-8")
    yield resolv
    server.stop()


def verify(resolv: Path, message: bytes) -> tuple[bool, str]:
    """(verified, OpenDKIM's complaint) for one message."""
    r = subprocess.run(["unshare", "--mount", "sh", "-c",
                        f"mount --bind '{resolv}' /etc/resolv.conf && exec '{TESTMSG}'"],
                       input=message.replace(b"\r\n", b"\n"), capture_output=True, timeout=60)
    return r.returncode == 0 and not r.stdout and not r.stderr, (r.stdout + r.stderr).decode(errors="replace")


@pytest.fixture
def nl(newsletter_dir: Path, monkeypatch) -> Path:
    monkeypatch.chdir(newsletter_dir)
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.delenv("DKIM_PRIVATE_KEY", raising=False)
    with open(newsletter_dir / "list.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["email", "name"])
        w.writerows(READERS)
    return newsletter_dir


def with_dkim(folder: Path, selector: str, key_file: Path | None) -> None:
    toml = folder / "newsletter.toml"
    key = f'key_file = "{key_file}"\n' if key_file else ""
    toml.write_text(toml.read_text(encoding="utf-8") +
                    f'\n[delivery.dkim]\ndomain = "example.org"\nselector = "{selector}"\n{key}', encoding="utf-8")


def send(*extra: str):
    return runner.invoke(app, ["send", "issues/mini.yaml", "--list", "list.csv", "--yes", *extra])


def _tamper(message: bytes) -> list[bytes]:
    """The message with its body changed, and with a signed header changed."""
    head, body = message.split(b"\r\n\r\n", 1)
    return [head + b"\r\n\r\n" + body.replace(b"Hello", b"Hallo", 1),
            message.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1)]


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_outbox_messages_verify_with_opendkim_and_fail_once_changed(nl, keys, published, algorithm):
    with_dkim(nl, algorithm, keys[algorithm])
    r = send()
    assert r.exit_code == 0 and "invalid: 1 (line 7" in r.output, r.output  # the CRLF name: refused, reported
    files = {}
    for p in (nl / "outbox" / "mini").glob("*.eml"):
        msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        files[msg["To"].addresses[0].addr_spec] = p.read_bytes()
    assert sorted(files) == sorted(SIGNED)
    for rcpt, data in files.items():
        assert data.count(b"DKIM-Signature:") == 1 and f"a={algorithm}-sha256".encode() in data
        ok, why = verify(published, data)
        assert ok, (rcpt, why)
        for changed in _tamper(data):
            ok, why = verify(published, changed)
            assert not ok and "signature" in why.lower(), (rcpt, why)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_smtp_messages_verify_with_opendkim(nl, keys, published, monkeypatch, algorithm):
    handler, port = Envelopes(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        for k, v in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("SMTP_USERNAME", raising=False)
        monkeypatch.delenv("SMTP_PASSWORD", raising=False)
        with_dkim(nl, algorithm, None)
        monkeypatch.setenv("DKIM_PRIVATE_KEY", keys[algorithm].read_text())  # the key from the environment
        r = send("--provider", "smtp")
    finally:
        controller.stop()
    assert r.exit_code == 0 and "invalid: 1 (line 7" in r.output, r.output
    assert "PRIVATE KEY" not in r.output
    got = {rcpt: content for _, [rcpt], content in handler.got}
    assert sorted(got) == sorted(SIGNED)
    for rcpt, data in got.items():
        ok, why = verify(published, data)
        assert ok, (rcpt, why)
        assert not any(verify(published, changed)[0] for changed in _tamper(data)), rcpt


def test_a_key_at_another_selector_does_not_verify(nl, keys, published):
    """The verifier really reads the DNS: signed with the rsa key under the ed25519 selector fails."""
    with_dkim(nl, "ed25519", keys["rsa"])
    send()
    data = next((nl / "outbox" / "mini").glob("ann@*.eml")).read_bytes()
    ok, why = verify(published, data)
    assert not ok, why


@pytest.mark.parametrize("problem", ["loose", "missing", "garbage", "link", "none"])
def test_a_bad_key_is_one_line_exit_2_nothing_sent(nl, keys, tmp_path, problem):
    key = tmp_path / "k.pem"
    if problem == "loose":
        shutil.copy(keys["rsa"], key)
        key.chmod(0o640)
    elif problem == "garbage":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        key.chmod(0o600)
    elif problem == "link":
        key.symlink_to(keys["rsa"])
    with_dkim(nl, "rsa", None if problem == "none" else key)
    r = send()
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and ("delivery.dkim" in lines[0] or "k.pem" in lines[0]), r.output
    assert "Traceback" not in r.output and not (nl / "outbox").exists()
    assert "PRIVATE KEY" not in r.output


def test_sendgrid_ignores_the_dkim_settings_with_a_note():
    dkim = DkimSettings(domain="example.org", selector="s1", key_file="/nonexistent")
    signer, note = signer_for(dkim, "sendgrid", {})
    assert signer is None and "SendGrid signs" in note


def test_keygen_writes_a_private_key_once_and_prints_its_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for algorithm in ("rsa", "ed25519"):
        r = runner.invoke(app, ["dkim", "keygen", "--selector", f"n{algorithm}", "--algorithm", algorithm,
                                "--domain", "example.org"])
        assert r.exit_code == 0, r.output
        path = tmp_path / f"dkim-n{algorithm}.pem"
        assert path.stat().st_mode & 0o777 == 0o600
        key = parse_key(path.read_bytes(), "k")
        assert f"n{algorithm}._domainkey.example.org. IN TXT {txt_chunks(key.record())}" in r.output
        assert "PRIVATE KEY" not in r.output
        before = path.read_bytes()
        again = runner.invoke(app, ["dkim", "keygen", "--selector", f"n{algorithm}", "--algorithm", algorithm])
        assert again.exit_code == 2 and "already exists" in again.output and path.read_bytes() == before
    (tmp_path / "planted").symlink_to(tmp_path / "elsewhere.pem")
    r = runner.invoke(app, ["dkim", "keygen", "--selector", "x", "--out", "planted"])
    assert r.exit_code == 2 and not (tmp_path / "elsewhere.pem").exists(), r.output
    for bad in (["--selector", "a b"], ["--selector", "x", "--algorithm", "dsa"], ["--selector", "x", "--domain", "-x"]):
        r = runner.invoke(app, ["dkim", "keygen", *bad])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output


def test_openssl_makes_dkimpys_rsa_signature_bit_for_bit():
    """The private-key operation handed to OpenSSL gives dkimpy's own pure-Python result."""
    import hashlib

    import dkim
    import dkim.crypto

    from newsletter_mailer.dkim_signing import rsa_by_openssl

    _, key = keygen("rsa")
    rsa_by_openssl(key.secret)
    private = dkim.crypto.parse_pem_private_key(key.secret)
    assert getattr(dkim.RSASSA_PKCS1_v1_5_sign, "by_openssl", False)
    for data in (b"", b"abc", bytes(range(256)) * 100):
        h = dkim.HashThrough(hashlib.sha256())
        h.update(data)
        assert dkim.RSASSA_PKCS1_v1_5_sign(h, private) == dkim.crypto.RSASSA_PKCS1_v1_5_sign(h, private)
