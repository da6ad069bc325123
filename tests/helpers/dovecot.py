"""A real Dovecot IMAP server for the tests: its own config, TLS with a throwaway CA, free ports.

Runs as the current user with `dovecot -F -c CONF` (no root needed); as root (CI) the
internal and login users are root too, and mail is stored under the test's tmp folder.
"""

from __future__ import annotations

import datetime
import getpass
import grp
import imaplib
import ipaddress
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "news", "s3cret-imap-pass"


def available() -> bool:
    return os.path.exists(DOVECOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem): a throwaway CA and a server certificate for 127.0.0.1/localhost."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


@dataclass
class Dovecot:
    folder: Path
    imaps_port: int
    imap_port: int
    ca_file: Path
    proc: subprocess.Popen
    run: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"IMAP_HOST": "127.0.0.1", "IMAP_PORT": str(self.imaps_port), "IMAP_USERNAME": USER,
                "IMAP_PASSWORD": PASSWORD, "IMAP_CA_FILE": str(self.ca_file), **extra}

    def client(self) -> imaplib.IMAP4_SSL:
        c = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port,
                              ssl_context=ssl.create_default_context(cafile=str(self.ca_file)))
        c.login(USER, PASSWORD)
        return c

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.run, ignore_errors=True)


CONF = """\
base_dir = {run}/base
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
{users}first_valid_uid = 0
mail_location = maildir:{run}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {run}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={run}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def _users() -> str:
    """As a normal user everything runs as that user; as root, Dovecot's own login user
    (its login processes refuse root) and its internal user, as a packaged Dovecot does."""
    if os.getuid() == 0:
        return ""
    user, group = getpass.getuser(), grp.getgrgid(os.getgid()).gr_name
    return (f"default_internal_user = {user}\ndefault_internal_group = {group}\n"
            f"default_login_user = {user}\n")


def _mail_owner() -> tuple[int, int]:
    """Dovecot refuses to store mail as root: as root, the packaged `dovecot` user owns it."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    entry = pwd.getpwnam("dovecot")
    return entry.pw_uid, entry.pw_gid


def start(folder: Path) -> Dovecot:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state").mkdir(exist_ok=True)
    # Dovecot's unprivileged processes must reach the sockets and the passwd file: a folder of their own
    run = Path(tempfile.mkdtemp(prefix="dovecot-"))
    run.chmod(0o755)
    (run / "base").mkdir()
    uid, gid = _mail_owner()
    for sub in ("mail", "home"):
        (run / sub).mkdir()
        os.chown(run / sub, uid, gid)
    ca, _, _ = make_ca(folder)
    (run / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")  # read by the auth process
    (run / "passwd").chmod(0o644)
    imaps, imap = _free_port(), _free_port()
    (folder / "dovecot.conf").write_text(CONF.format(
        d=folder, run=run, users=_users(), uid=uid, gid=gid, imap=imap, imaps=imaps))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(folder / "dovecot.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Dovecot(folder, imaps, imap, ca, proc, run)
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited: {proc.stdout.read().decode()} "
                               f"{(folder / 'dovecot.log').read_text() if (folder / 'dovecot.log').exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", imaps), timeout=1).close()
        except OSError:
            time.sleep(0.05)
            continue
        server.client().logout()
        return server
    server.stop()
    raise RuntimeError("dovecot did not start: " + (folder / "dovecot.log").read_text())
