"""SMTP against real mail infrastructure (issue 10): a private CA, certificates that fail for
different reasons, one login attempt then QUIT, the AUTH hint by security, no clear-text
password to another machine, and a hostile server echoing the AUTH exchange.

Real aiosmtpd servers with STARTTLS on 127.0.0.1; the CA and the server certificates are made
here with `cryptography`, so nothing touches the network."""

from __future__ import annotations

import base64
import dataclasses
import ssl
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.providers import get_provider
from newsletter_mailer.send import send_context
from tests.test_smtp_provider import PW, USER, Handler, free_port, make_ctx, rcpt

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

NOW = datetime.now(timezone.utc)


# -- certificates ------------------------------------------------------------------------------


@dataclasses.dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _cert(subject: str, issuer: Issued | None, *, ca: bool = False, names: tuple[str, ...] = (),
          days: tuple[int, int] = (-1, 30)) -> Issued:
    """A certificate for subject, signed by issuer (self-signed when None), valid NOW+days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer = issuer or Issued(None, key)  # type: ignore[arg-type]
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.cert.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW + timedelta(days=days[0])).not_valid_after(NOW + timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
                        critical=False))
    if names:
        sans = [x509.IPAddress(IPv4Address(n)) if n[0].isdigit() else x509.DNSName(n) for n in names]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(b.sign(signer.key, hashes.SHA256()), key)


def _pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def _server_context(tmp: Path, leaf: Issued) -> ssl.SSLContext:
    _pem(tmp / "server.pem", leaf.cert)
    (tmp / "server.key").write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    return ctx


@pytest.fixture
def org_ca(tmp_path: Path) -> tuple[Issued, Path]:
    """An organisation's own CA, and its PEM file (what SMTP_CA_FILE points at)."""
    ca = _cert("Example Org Internal CA", None, ca=True)
    return ca, _pem(tmp_path / "org-ca.pem", ca.cert)


# -- servers -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Counting(Handler):
    """Also counts AUTH attempts (through its authenticator) and QUITs; can echo the AUTH exchange."""

    auths: list[str] = dataclasses.field(default_factory=list)
    quits: int = 0
    echo: bool = False
    offer_auth: bool = True

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return responses if self.offer_auth else [r for r in responses if "AUTH" not in r]

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.auths.append(mechanism)
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
              and auth_data.password == PW.encode())
        if ok or not self.echo:
            return AuthResult(success=ok, handled=False)
        # A hostile server: the credentials back in its refusal, as the client sent them.
        plain = base64.b64encode(b"\0" + auth_data.login + b"\0" + auth_data.password).decode()
        login = base64.b64encode(auth_data.password).decode()
        return AuthResult(success=False, handled=False,
                          message=f"535 5.7.8 rejected AUTH {mechanism} {plain} {login} {login.rstrip('=')}")


@pytest.fixture
def tls_smtpd(tmp_path: Path):
    """smtpd(leaf, auth=True, **kw) -> (handler, port): an aiosmtpd server requiring STARTTLS with
    leaf's certificate (none: no TLS)."""
    controllers: list[Controller] = []

    def start(leaf: Issued | None, *, auth: bool = True, **kw) -> tuple[Counting, int]:
        handler = Counting()
        port = free_port()
        if auth:
            kw = dict(authenticator=handler.authenticate, auth_required=True, **kw)
        if leaf is None:  # no TLS: a relay on this machine
            kw["auth_require_tls"] = False
        else:
            kw.update(tls_context=_server_context(tmp_path, leaf), require_starttls=True)
        c = Controller(handler, hostname="127.0.0.1", port=port, **kw)
        c.start()
        handler.connections = 0
        controllers.append(c)
        return handler, port

    yield start
    for c in controllers:
        c.stop()


def smtp(composed, newsletter_dir, port, **env):
    return get_provider("smtp", make_ctx(composed, newsletter_dir, **{"SMTP_PORT": port, "SMTP_SECURITY": "starttls", **env}))


def open_error(p) -> str:
    with pytest.raises(NewsletterError) as ei:
        p.open()
    p.close()
    msg = str(ei.value)
    assert "\n" not in msg and PW not in msg
    return msg


LOGIN = {"SMTP_USERNAME": USER, "SMTP_PASSWORD": PW}


# -- 1, 2: private CAs, and TLS hints that say what failed --------------------------------------


def test_private_ca_file_is_trusted_in_addition_to_the_system_store(composed, newsletter_dir, tls_smtpd, org_ca):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)))
    p = smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), **LOGIN)
    p.open()
    assert p.send([rcpt(composed, "ann@example.org")])[0].ok
    p.close()
    assert len(h.received) == 1 and h.auths == ["PLAIN"]
    assert ssl.create_default_context().cert_store_stats()["x509_ca"] <= \
        p._tls.cert_store_stats()["x509_ca"] - 1  # the system's CAs, plus the organisation's


def test_ca_file_from_the_settings_file(composed, newsletter_dir, tls_smtpd, org_ca):
    from newsletter_mailer.settings import SmtpSettings

    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)), auth=False)
    s = composed.settings
    conf = SmtpSettings(host="127.0.0.1", port=port, security="starttls", ca_file=str(ca_file))
    composed = dataclasses.replace(
        composed, settings=s.model_copy(update={"delivery": s.delivery.model_copy(update={"smtp": conf})}))
    p = get_provider("smtp", send_context(composed, env={}))
    p.open()
    assert p.send([rcpt(composed, "ann@example.org")])[0].ok
    p.close()


def test_unknown_issuer_says_to_set_the_ca_file(composed, newsletter_dir, tls_smtpd, org_ca):
    ca, _ = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)))
    msg = open_error(smtp(composed, newsletter_dir, port, **LOGIN))
    assert msg.startswith(f"TLS certificate check failed for SMTP server 127.0.0.1:{port}")
    assert "issued by a CA this machine does not trust: set SMTP_CA_FILE (or delivery.smtp.ca_file)" in msg
    assert "name on the server's certificate" not in msg
    assert h.auths == [] and h.received == []


def test_self_signed_certificate_says_to_set_the_ca_file(composed, newsletter_dir, tls_smtpd):
    h, port = tls_smtpd(_cert("relay", None, names=("127.0.0.1",)))
    msg = open_error(smtp(composed, newsletter_dir, port, **LOGIN))
    assert "self-signed" in msg and "set SMTP_CA_FILE" in msg


def test_name_mismatch_says_to_check_the_host(composed, newsletter_dir, tls_smtpd, org_ca):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("mail.example.org",)))
    msg = open_error(smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), **LOGIN))
    assert "check SMTP_HOST is the name on the server's certificate" in msg and "SMTP_CA_FILE" not in msg


@pytest.mark.parametrize("days, needle", [
    ((-30, -1), "the server's certificate has expired: it must be renewed on the server"),
    ((2, 30), "the server's certificate is not valid yet: check this machine's clock"),
])
def test_expired_or_not_yet_valid_certificate_says_so(composed, newsletter_dir, tls_smtpd, org_ca, days, needle):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",), days=days))
    msg = open_error(smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), **LOGIN))
    assert needle in msg and "name on the server's certificate" not in msg


@pytest.mark.parametrize("content, needle", [(None, "cannot read the SMTP CA file: No such file"),
                                             (b"not a certificate\n", "holds no PEM certificate")])
def test_unreadable_ca_file_is_one_line_before_connecting(composed, newsletter_dir, tmp_path, content, needle):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(NewsletterError) as ei:
        smtp(composed, newsletter_dir, free_port(), SMTP_CA_FILE=str(path))
    msg = str(ei.value)
    assert msg.startswith(str(path)) and needle in msg and "SMTP_CA_FILE" in msg and "\n" not in msg


# -- 3: one login attempt, then QUIT ------------------------------------------------------------


def test_wrong_password_is_one_auth_attempt_then_quit(composed, newsletter_dir, tls_smtpd, org_ca):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)))
    p = smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), SMTP_USERNAME=USER,
             SMTP_PASSWORD=PW + "-wrong")
    msg = open_error(p)
    assert "535" in msg and "check SMTP_USERNAME and SMTP_PASSWORD" in msg
    assert h.auths == ["PLAIN"]  # one attempt in the server's log, not PLAIN then LOGIN
    assert h.quits == 1 and h.received == []


def test_wrong_password_on_this_machine_is_one_auth_attempt_then_quit(composed, newsletter_dir, tls_smtpd):
    h, port = tls_smtpd(None)
    p = smtp(composed, newsletter_dir, port, SMTP_SECURITY="none", SMTP_USERNAME=USER, SMTP_PASSWORD=PW + "-wrong")
    assert "535" in open_error(p)
    assert h.auths == ["PLAIN"] and h.quits == 1


def test_login_only_server_gets_one_login_attempt(composed, newsletter_dir, tls_smtpd, org_ca):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)), auth_exclude_mechanism=["PLAIN"])
    p = smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), **LOGIN)
    p.open()
    p.close()
    assert h.auths == ["LOGIN"] and h.quits == 1


# -- 4: the AUTH hint says what to change --------------------------------------------------------


def test_no_auth_even_over_tls_says_check_the_port_or_drop_the_username(composed, newsletter_dir, tls_smtpd, org_ca):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)), auth=False)  # a port 25 relay
    h.offer_auth = False
    msg = open_error(smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), **LOGIN))
    assert f"127.0.0.1:{port} does not offer SMTP AUTH (login), even over TLS" in msg
    assert "check SMTP_PORT: 587" in msg and "unset SMTP_USERNAME" in msg
    assert "set SMTP_SECURITY=starttls or ssl" not in msg
    assert h.quits == 1


# -- 5: no password in clear to another machine; no echoed credentials --------------------------


@pytest.mark.parametrize("host", ["192.0.2.25", "relay.example.org"])
def test_clear_text_password_to_another_host_is_refused_before_connecting(composed, newsletter_dir, host):
    with pytest.raises(NewsletterError) as ei:
        get_provider("smtp", make_ctx(composed, newsletter_dir, SMTP_HOST=host, SMTP_PORT=25, **LOGIN))
    msg = str(ei.value)
    assert f"would cross the network to {host} in clear text" in msg and PW not in msg
    assert "SMTP_SECURITY=starttls or ssl" in msg
    assert "delivery.smtp.allow_insecure_auth = true" in msg and "SMTP_ALLOW_INSECURE_AUTH=1" in msg


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_clear_text_password_to_this_machine_is_allowed(composed, newsletter_dir, host):
    assert get_provider("smtp", make_ctx(composed, newsletter_dir, SMTP_HOST=host, **LOGIN)).host == host


def test_clear_text_password_when_the_user_says_so(composed, newsletter_dir):
    from newsletter_mailer.settings import SmtpSettings

    env = dict(SMTP_HOST="192.0.2.25", SMTP_PORT=25, **LOGIN)
    assert get_provider("smtp", make_ctx(composed, newsletter_dir, SMTP_ALLOW_INSECURE_AUTH="1", **env))
    s = composed.settings
    conf = SmtpSettings(allow_insecure_auth=True)
    allowed = dataclasses.replace(
        composed, settings=s.model_copy(update={"delivery": s.delivery.model_copy(update={"smtp": conf})}))
    assert get_provider("smtp", make_ctx(allowed, newsletter_dir, **env))
    with pytest.raises(NewsletterError, match="clear text"):  # the environment can say no again
        get_provider("smtp", make_ctx(allowed, newsletter_dir, SMTP_ALLOW_INSECURE_AUTH="0", **env))


@pytest.mark.parametrize("exclude", [[], ["PLAIN"]])
def test_server_echoing_the_auth_exchange_gets_no_credentials_printed(composed, newsletter_dir, tls_smtpd,
                                                                     org_ca, capsys, exclude):
    ca, ca_file = org_ca
    h, port = tls_smtpd(_cert("relay", ca, names=("127.0.0.1",)), auth_exclude_mechanism=exclude)
    h.echo = True
    wrong = PW + "-x"  # 19 characters: its base64 is padded
    msg = open_error(smtp(composed, newsletter_dir, port, SMTP_CA_FILE=str(ca_file), SMTP_USERNAME=USER,
                          SMTP_PASSWORD=wrong))
    assert "535 5.7.8 rejected AUTH" in msg and "[redacted]" in msg
    plain = base64.b64encode(f"\0{USER}\0{wrong}".encode()).decode()
    login = base64.b64encode(wrong.encode()).decode()
    assert login.endswith("=")
    for form in (wrong, plain, plain.rstrip("="), login, login.rstrip("=")):
        assert form not in msg
    out = capsys.readouterr()
    assert login.rstrip("=") not in out.out + out.err
