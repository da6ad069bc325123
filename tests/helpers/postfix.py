"""A real Postfix relay for the tests: a private instance, its own config and queue, a free port.

Debian's `postfix` package is installed with "No configuration" (.ci/install-system.sh): its
service is never started or needed. Each instance gets its own config_directory, queue_directory
and data_directory in a temp folder, listens on 127.0.0.1 only (smtpd on a free port, set in its
master.cf), accepts mail from loopback for `domains` and delivers it with Postfix's virtual(8)
agent into one Maildir (`Postfix.maildir`), where the test reads what arrived. STARTTLS is
offered with a certificate of a throwaway CA (`Postfix.ca_file`), as on a real relay's port 587.
Postfix's master must run as root (it drops to the `postfix` user for its daemons): as another
user the tests that need it are not runnable (`available()` says so).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.dovecot import make_ca

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DAEMONS = "/usr/lib/postfix/sbin"


def available() -> bool:
    return os.path.exists(POSTFIX) and os.path.exists(f"{DAEMONS}/master") and os.getuid() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {run}/queue
data_directory = {run}/data
daemon_directory = {daemons}
command_directory = /usr/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {run}/postfix.log
maillog_file_prefixes = {run}
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
biff = no
smtputf8_enable = no
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {run}/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = {uid}
virtual_destination_concurrency_limit = 4
smtpd_tls_security_level = may
smtpd_tls_cert_file = {run}/etc/cert.pem
smtpd_tls_key_file = {run}/etc/key.pem
smtpd_tls_received_header = yes
"""

# Every daemon unchrooted (the queue is not laid out for a chroot); smtpd on our own port.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class Postfix:
    run: Path
    port: int
    proc: subprocess.Popen
    ca_file: Path  # the throwaway CA of its STARTTLS certificate (127.0.0.1, localhost)

    @property
    def config(self) -> Path:
        return self.run / "etc"

    @property
    def maildir(self) -> Path:
        return self.run / "mail" / "inbox"

    def log(self) -> str:
        p = self.run / "postfix.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=60)

    def queue_is_empty(self) -> bool:
        """Nothing waiting in Postfix's queue (incoming, active or deferred): all delivered or bounced."""
        queue = self.run / "queue"
        return not any(f.is_file() for sub in ("incoming", "active", "deferred", "hold", "maildrop")
                       for f in (queue / sub).rglob("*"))

    def delivered(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir()) if new.exists() else []

    def wait_delivered(self, n: int, timeout: float = 300) -> list[Path]:
        """The Maildir's files once `n` arrived and the queue is empty (or what is there at the timeout:
        the test says what is missing). Polls the folder: delivery is Postfix's, in its own time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = self.delivered()
            if len(files) >= n and self.queue_is_empty():
                return files
            time.sleep(0.2)
        return self.delivered()

    def stop(self) -> None:
        self.postfix("stop")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.run, ignore_errors=True)


def start(domains: str = "example.org") -> Postfix:
    """A running private Postfix on 127.0.0.1:<free port> delivering mail for `domains` to its Maildir."""
    # Postfix's unprivileged daemons (user postfix) must reach the queue and the mail: a 0755 folder
    # of its own, not the test's 0700 tmp_path.
    run = Path(tempfile.mkdtemp(prefix="postfix-"))
    run.chmod(0o755)
    owner = pwd.getpwnam("postfix")
    for sub in ("etc", "mail", "queue", "data"):
        (run / sub).mkdir(mode=0o755)
    os.chown(run / "mail", owner.pw_uid, owner.pw_gid)
    port = _free_port()
    ca, _, _ = make_ca(run / "etc")  # smtpd reads its key as root, before it drops to `postfix`
    (run / "etc" / "main.cf").write_text(MAIN_CF.format(run=run, daemons=DAEMONS, domains=domains,
                                                        uid=owner.pw_uid, gid=owner.pw_gid))
    (run / "etc" / "master.cf").write_text(MASTER_CF.format(port=port))
    # the queue's folders, owners and modes as Postfix wants them (what `postfix check` would fix)
    made = subprocess.run([POSTFIX, "-c", str(run / "etc"), "set-permissions", "create-missing"],
                          capture_output=True, text=True, timeout=60)
    if made.returncode:
        log = (run / "postfix.log").read_text(errors="replace") if (run / "postfix.log").exists() else ""
        shutil.rmtree(run, ignore_errors=True)
        raise RuntimeError(f"postfix set-permissions failed: {made.stderr} {log}")
    with open(run / "start-fg.out", "wb") as out:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen([POSTFIX, "-c", str(run / "etc"), "start-fg"], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Postfix(run, port, proc, ca)
    for _ in range(200):
        if proc.poll() is not None:
            out = (run / "start-fg.out").read_text(errors="replace")
            log = server.log()
            shutil.rmtree(run, ignore_errors=True)
            raise RuntimeError(f"postfix exited: {out} {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("postfix did not start: " + server.log())
