"""`newsletter doctor` against a real authoritative DNS server (NSD on a loopback port): a good
zone passes every check; each broken zone fails with its own named line, and only that one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsletter_mailer.cli import app
from newsletter_mailer.dkim_signing import keygen, txt_chunks
from tests.conftest import EXAMPLE_SETTINGS, MINI_ISSUE
from tests.helpers import nsd

pytestmark = pytest.mark.skipif(not nsd.available(), reason="nsd not installed (.ci/install-system.sh)")
runner = CliRunner()

MAIL_IP = "192.0.2.10"


def zone(name: str, key: str, *, spf: str | list[str] | None = "v=spf1 a:mail.{z} include:_spf.{z} -all",
         dkim: str | None = "", dmarc: str | None = "v=DMARC1; p=reject; rua=mailto:dmarc@{z}",
         mx: bool = True, extra: str = "") -> str:
    """A sending domain's records: SPF (a list: several records), DKIM key at s1 ("" = the right key),
    DMARC, MX; each None leaves it out."""
    lines = [f"mail IN A {MAIL_IP}", '_spf IN TXT "v=spf1 ip4:198.51.100.0/24 -all"']
    for record in ([spf] if isinstance(spf, str) else spf or []):
        lines.append(f"@ IN TXT {txt_chunks(record.format(z=name))}")
    if dkim is not None:
        lines.append(f"s1._domainkey IN TXT {txt_chunks(dkim or key)}")
    if dmarc is not None:
        lines.append(f'_dmarc IN TXT "{dmarc.format(z=name)}"')
    if mx:
        lines.append(f"@ IN MX 10 mail.{name}.")
    return "\n".join(lines) + "\n" + extra


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (private key file, 0600; its DKIM record): the one in use, and another one."""
    folder = tmp_path_factory.mktemp("keys")
    out = {}
    for name, algorithm in (("rsa", "rsa"), ("other", "rsa"), ("ed25519", "ed25519")):
        pem, key = keygen(algorithm)
        (folder / f"{name}.pem").write_bytes(pem)
        (folder / f"{name}.pem").chmod(0o600)
        out[name] = folder / f"{name}.pem", key.record()
    return out


ELEVEN = " ".join(f"include:i{n}.{{z}}" for n in range(1, 11))

# zone -> (its records' overrides, the one check that must fail)
BROKEN = {
    "nospf.example": (dict(spf=None), "spf-record"),
    "twospf.example": (dict(spf=["v=spf1 a:mail.{z} -all", "v=spf1 ip4:192.0.2.10 -all"]), "spf-record"),
    "plusall.example": (dict(spf="v=spf1 a:mail.{z} +all"), "spf-all"),
    "lookups.example": (dict(spf="v=spf1 a:mail.{z} " + ELEVEN + " -all",
                          extra="".join(f'i{n} IN TXT "v=spf1 -all"\n' for n in range(1, 11))), "spf-lookups"),
    "nohost.example": (dict(spf="v=spf1 ip4:198.51.100.0/24 -all"), "spf-sender"),
    "nodkim.example": (dict(dkim=None), "dkim-key"),
    "wrongkey.example": (dict(dkim="other"), "dkim-key"),
    "nodmarc.example": (dict(dmarc=None), "dmarc-record"),
    "misaligned.example": (dict(dmarc="v=DMARC1; p=reject; adkim=s; aspf=s"), "dmarc-alignment"),
    "nomx.example": (dict(mx=False), "bounces"),
}


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory, keys):
    records = {n: r for n, (_, r) in keys.items()}
    zones = {"good.example": zone("good.example", records["rsa"])}
    for name, (over, _) in BROKEN.items():
        over = dict(over)
        if over.get("dkim") == "other":
            over["dkim"] = records["other"]
        zones[name] = zone(name, records["rsa"], **over)
    # misaligned: bounces and the signature both on a subdomain, which strict alignment refuses
    zones["misaligned.example"] += (f'bounce IN TXT "v=spf1 a:mail.misaligned.example -all"\nbounce IN MX 10 mail.misaligned.example.\n'
                                 f"s1._domainkey.sign IN TXT {txt_chunks(records['rsa'])}\n")
    server = nsd.start(tmp_path_factory.mktemp("nsd"), zones)
    yield server
    server.stop()


def newsletter(folder: Path, domain: str, key: Path, *, return_path: str | None = None,
               dkim_domain: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = EXAMPLE_SETTINGS.read_text(encoding="utf-8")
    text = text.replace('from_email = "newsletter@example.org"', f'from_email = "news@{domain}"')
    text = text.replace('provider = "outbox"', 'provider = "smtp"\nreturn_path = "%s"' % (return_path or f"bounces@{domain}"))
    text = text.replace("[delivery.smtp]\n", f'[delivery.smtp]\nhost = "mail.{domain}"\n')
    text += f'\n[delivery.dkim]\ndomain = "{dkim_domain or domain}"\nselector = "s1"\nkey_file = "{key}"\n'
    (folder / "newsletter.toml").write_text(text, encoding="utf-8")
    (folder / "issues").mkdir(exist_ok=True)
    (folder / "issues" / "mini.yaml").write_text(MINI_ISSUE, encoding="utf-8")
    return folder


def doctor(folder: Path, server, monkeypatch, *args: str):
    monkeypatch.chdir(folder)
    monkeypatch.delenv("DKIM_PRIVATE_KEY", raising=False)
    r = runner.invoke(app, ["doctor", "--nameserver", server.address, *args])
    lines = r.output.strip().splitlines()
    checks = [l.split(None, 2) for l in lines[:-1]]
    return r, {(level, name.rstrip(":")) for level, name, _ in checks}, lines


def failing(found) -> set[str]:
    return {name for level, name in found if level == "failure" and name != "bulk"}


def test_the_good_zone_passes_every_check(tmp_path, dns_server, keys, monkeypatch):
    nl = newsletter(tmp_path / "good", "good.example", keys["rsa"][0])
    r, found, lines = doctor(nl, dns_server, monkeypatch)
    assert r.exit_code == 0, r.output
    levels = {level for level, _ in found}
    assert levels == {"ok", "warning"} or levels == {"ok"}, r.output
    # the only warning: no issue sent yet, so no complaint rate
    assert [l for l in lines if l.startswith("warning")] == [l for l in lines if "nothing to measure" in l], r.output
    for name in ("spf-record", "spf-lookups", "spf-sender", "dkim-key", "dmarc-record", "dmarc-alignment",
                 "bounces", "unsubscribe", "bulk"):
        assert ("ok", name) in found, (name, r.output)
    assert f"mail.good.example ({MAIL_IP})" in r.output and "matches the private key" in r.output


@pytest.mark.parametrize("domain", sorted(BROKEN))
def test_each_broken_zone_fails_with_its_own_line(tmp_path, dns_server, keys, monkeypatch, domain):
    extra = {}
    if domain == "misaligned.example":
        extra = dict(return_path="bounces@bounce.misaligned.example", dkim_domain="sign.misaligned.example")
    nl = newsletter(tmp_path / domain, domain, keys["rsa"][0], **extra)
    r, found, lines = doctor(nl, dns_server, monkeypatch)
    assert r.exit_code == 1, r.output
    assert failing(found) == {BROKEN[domain][1]}, r.output
    line = next(l for l in lines if l.startswith("failure") and BROKEN[domain][1] in l.split()[1])
    assert domain in line and ":" in line.split(": ", 1)[1], line  # what is wrong, then the fix
    assert "Traceback" not in r.output


def test_sendgrid_needs_its_include_and_its_two_keys(tmp_path, dns_server, keys, monkeypatch):
    nl = newsletter(tmp_path / "sg", "good.example", keys["rsa"][0])
    r, found, lines = doctor(nl, dns_server, monkeypatch, "--provider", "sendgrid")
    assert r.exit_code == 1, r.output
    assert failing(found) == {"spf-sender", "dkim-key"}, r.output
    assert any("include:sendgrid.net" in l for l in lines) and any("s2._domainkey.good.example" in l for l in lines)


def test_without_our_signature_the_relay_must_sign(tmp_path, dns_server, keys, monkeypatch):
    nl = newsletter(tmp_path / "relay", "good.example", keys["rsa"][0])
    toml = nl / "newsletter.toml"
    toml.write_text(toml.read_text().split("\n[delivery.dkim]")[0] + "\n")
    r, found, lines = doctor(nl, dns_server, monkeypatch)
    assert r.exit_code == 0, r.output  # SPF aligns: DMARC passes; DKIM is the relay's to do
    assert ("warning", "dkim-key") in found and any("relay must DKIM-sign" in l for l in lines), r.output


def test_a_key_file_others_can_read_is_a_failure_not_a_traceback(tmp_path, dns_server, keys, monkeypatch):
    loose = tmp_path / "loose.pem"
    shutil.copy(keys["rsa"][0], loose)
    loose.chmod(0o644)
    nl = newsletter(tmp_path / "loose", "good.example", loose)
    r, found, lines = doctor(nl, dns_server, monkeypatch)
    assert r.exit_code == 1 and failing(found) == {"dkim-key"}, r.output
    assert any("chmod 600" in l for l in lines), r.output


@pytest.mark.parametrize("bad", ["not-an-ip", "127.0.0.1:99999", "[::1", "example.org:53"])
def test_a_bad_nameserver_is_one_line_exit_2(tmp_path, keys, monkeypatch, bad):
    nl = newsletter(tmp_path / "bad", "good.example", keys["rsa"][0])
    monkeypatch.chdir(nl)
    r = runner.invoke(app, ["doctor", "--nameserver", bad])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "--nameserver" in r.output, r.output


def test_a_silent_nameserver_fails_each_check_with_one_line(tmp_path, keys, monkeypatch):
    """Nobody answers on this port: every DNS check says so; no traceback, no hang past the timeout."""
    import socket

    from newsletter_mailer.doctor import lookup

    monkeypatch.setattr(lookup, "TIMEOUT", 0.2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # bound, never read: queries go unanswered
        s.bind(("127.0.0.1", 0))
        nl = newsletter(tmp_path / "silent", "good.example", keys["rsa"][0])
        monkeypatch.chdir(nl)
        r = runner.invoke(app, ["doctor", "--nameserver", f"127.0.0.1:{s.getsockname()[1]}"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "cannot read the SPF of good.example" in r.output, r.output


def test_the_table_reads_the_complaint_rate_of_the_last_three_issues(tmp_path, dns_server, keys, monkeypatch,
                                                                    database_url):
    """On SQLite and PostgreSQL: an older issue's complaints no longer count; 1 in 600 is under
    0.3% but over the 0.1% to aim for (warning); 3 in 600 is over (failure)."""
    from newsletter_mailer.audience.store import Change
    from newsletter_mailer.providers import Outcome
    from newsletter_mailer.state.handle import State

    nl = newsletter(tmp_path / "rate", "good.example", keys["rsa"][0])
    if database_url:
        monkeypatch.setenv("NEWSLETTER_DATABASE_URL", database_url)
    state = State(nl / ".newsletter", database_url)
    ledger, store = state.ledger(), state.audience()
    sent = {"old": 10, "b": 200, "c": 200, "d": 200}
    for day, (slug, n) in enumerate(sent.items(), start=1):
        readers = [f"r{i}@example.com" for i in range(n)]
        ledger.begin(slug, readers, "smtp")
        ledger.finish(slug, [Outcome(a, ok=True, message_id=f"<{slug}{i}@x>") for i, a in enumerate(readers)])
        with ledger.db.transaction():  # one issue a day, oldest first
            ledger.db.execute("UPDATE deliveries SET updated_at=? WHERE issue=?", (f"2026-0{day}-01T10:00:00+00:00", slug))
    store.record([Change(f"r{i}@example.com", "complained", "mailbox", issue="old") for i in range(5)]
                 + [Change("r0@example.com", "complained", "mailbox", issue="c")])
    r, found, lines = doctor(nl, dns_server, monkeypatch)
    rate = [l for l in lines if "spam complaints" in l]
    assert r.exit_code == 0 and len(rate) == 1 and rate[0].startswith("warning"), r.output
    assert "0.17% over the last 3 issue(s) (1 of 600 sent)" in rate[0], rate

    store.record([Change(f"r{i}@example.com", "complained", "mailbox", issue="d") for i in (7, 8)])
    ledger.close(), store.close()
    r, found, lines = doctor(nl, dns_server, monkeypatch)
    rate = [l for l in lines if "spam complaints" in l]
    assert r.exit_code == 1 and rate[0].startswith("failure") and "(3 of 600 sent)" in rate[0], r.output
    assert failing(found) == set(), r.output  # only the table's line
