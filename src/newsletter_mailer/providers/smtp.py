"""Delivery over SMTP: one connection reused for the whole send, each message its own transaction.

What can and cannot be retried is decided by where a failure happens:

* a 4xx reply (MAIL, RCPT, DATA or after the final "."), a connection lost before the
  message data was completely handed over: the server has not accepted the message, so
  it is retried (reconnecting when needed) with exponential backoff, at most
  ``MAX_ATTEMPTS`` times, then reported as a temporary failure;
* a 5xx reply to RCPT, DATA or the final ".": the server refused this message for good
  (``permanent=True``); the connection is RSET and the send goes on;
* the connection lost after the final "." went out but before the reply came back: the
  server may have accepted the message, so it is reported ``uncertain`` and never retried
  here (a retry could deliver it twice).

The rate limit and the consecutive-failure budget belong to the send loop, not here.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import smtplib
import socket
import ssl
import time
from typing import Callable

from newsletter_mailer import mailserver
from newsletter_mailer.errors import NewsletterError, redact
from newsletter_mailer.message import HeaderValueError
from newsletter_mailer.providers.base import (Crowded, Outcome, Recipient, SendContext, WholeMessages, backoff_base,
                                              env_value)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
SECURITIES = ("none", "starttls", "ssl")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
UNCERTAIN = "connection lost after the message was sent; delivery unknown"

# One AUTH attempt, with the first of these the server offers. PLAIN first: the password only
# ever goes over TLS (or to this machine, or where allow_insecure_auth says so), and PLAIN is
# one round trip that every server offers; LOGIN is its older twin; CRAM-MD5 last (MD5, made
# obsolete, and it needs the server to keep the password in clear).
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

_EOL = re.compile(rb"\r\n|\r|\n")
# How relays say "one connection too many": 421 (Postfix's smtpd_client_connection_count_limit,
# Exchange Online's 4.3.2), or a 4xx whose text says so.
_TOO_MANY = re.compile(r"too many (?:concurrent |simultaneous |open )?(?:connections|sessions)|concurrent connections",
                       re.IGNORECASE)
MAX_CONNECTIONS = 16
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class _Secret:
    """The password, kept out of reprs, tracebacks with locals and log records."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class _Retry(Exception):
    """This attempt failed in a way that left the message unaccepted: safe to try again."""

    def __init__(self, error: str, *, reconnect: bool = False, unreachable: bool = False, busy: bool = False):
        super().__init__(error)
        self.error = error
        self.reconnect = reconnect          # drop the connection before the next attempt
        self.unreachable = unreachable      # could not (re)connect at all
        self.busy = busy                    # the server wants fewer connections (421, "too many connections")


def _crowded(code: int, text: bytes | str) -> bool:
    """The reply of a server that wants fewer connections from us."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return code == 421 or (400 <= code < 500 and _TOO_MANY.search(text) is not None)


def _connections(raw: str | None, configured: int) -> int:
    """SMTP_CONNECTIONS, else delivery.smtp.connections (1 to MAX_CONNECTIONS)."""
    if raw is None:
        return configured
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_CONNECTIONS:
        raise NewsletterError(f"SMTP_CONNECTIONS is '{raw}', not a number from 1 to {MAX_CONNECTIONS}",
                              hint="e.g. export SMTP_CONNECTIONS=4, or unset it for delivery.smtp.connections")
    return int(raw)


def _reply(code: int, text: bytes | str) -> str:
    """'550 5.1.1 no such user' on one line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return f"{code} {text}".strip()


def _flag(raw: str | None, name: str) -> bool | None:
    """An on/off environment setting (1/0, true/false, yes/no); None when unset."""
    if raw is None:
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise NewsletterError(f"{name} is '{raw}', not 1 or 0", hint=f"e.g. export {name}=1")


def _loopback(host: str) -> bool:
    """This machine, by name or address (no DNS lookup: a name that resolves to it is not trusted)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return mailserver.tls_context(ca_file, "SMTP", "check SMTP_CA_FILE or delivery.smtp.ca_file (relative to the current folder)")


def _cert_hint(exc: ssl.SSLCertVerificationError) -> str:
    return mailserver.certificate_hint(exc, "SMTP_HOST", "SMTP_CA_FILE", "delivery.smtp.ca_file")


def _port(raw: str | None, configured: int | None, security: str) -> int:
    """SMTP_PORT, else delivery.smtp.port, else the usual port of the security mode."""
    if raw is not None:
        return mailserver.port(raw, "SMTP_PORT", 587)
    return mailserver.in_range(configured if configured is not None else DEFAULT_PORTS[security], "SMTP", 587)


def _hang_up(conn: smtplib.SMTP, *, quit: bool) -> None:
    """QUIT (when the server is still listening) and close, whatever either raises: the
    connection is being given up, and its errors would only hide the one that matters."""
    if quit:
        try:
            conn.quit()
        except Exception:  # noqa: BLE001
            pass
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


class SmtpProvider(WholeMessages):
    """Any SMTP server; batches of one, so each message is its own ledger step."""

    name = "smtp"
    batch_size = 1
    label = "SMTP"

    def __init__(self, ctx: SendContext):
        self.ctx = ctx
        env = ctx.env
        smtp = ctx.settings.delivery.smtp
        self.from_email = ctx.settings.from_email
        self.timeout = float(smtp.timeout)

        host = env_value(env, "SMTP_HOST") or (smtp.host.strip() if smtp.host else None)
        if not host:
            raise NewsletterError("SMTP_HOST is not set: export SMTP_HOST=… or set delivery.smtp.host in newsletter.toml")
        self.host = host

        security = env_value(env, "SMTP_SECURITY") or smtp.security or "starttls"
        security = security.lower()
        if security not in SECURITIES:
            raise NewsletterError(f"SMTP_SECURITY '{security}' is not one of none, starttls, ssl",
                                  hint="starttls for port 587, ssl for port 465, none only for a local relay")
        self.security = security

        self.port = _port(env_value(env, "SMTP_PORT"), smtp.port, security)
        self._credentials()
        self._tls = _tls_context(env_value(env, "SMTP_CA_FILE") or smtp.ca_file)
        self.backoff_base = backoff_base(env)

        self._conn: smtplib.SMTP | None = None
        self.connections = 0  # how many connections were opened (reconnects included)
        # How many connections the send uses at once (send_pool.py); each is its own SmtpProvider.
        self.pool_size = _connections(env_value(env, "SMTP_CONNECTIONS"), smtp.connections)
        # Set by the pool while other connections work: True when this one may be given up.
        self.retire: Callable[[], bool] | None = None

    def _credentials(self) -> None:
        """Username and password, both or neither; never a password in clear to another machine
        unless the user said so."""
        env, smtp = self.ctx.env, self.ctx.settings.delivery.smtp
        self.username = env_value(env, "SMTP_USERNAME") or (smtp.username.strip() if smtp.username else None)
        password = env.get("SMTP_PASSWORD") or None  # only from the environment, never the file
        if password is not None and not self.username:
            raise NewsletterError("SMTP_PASSWORD is set but there is no SMTP username",
                                  hint="export SMTP_USERNAME=… or set delivery.smtp.username in newsletter.toml")
        if self.username and password is None:
            raise NewsletterError(f"SMTP username '{self.username}' is set but SMTP_PASSWORD is not",
                                  hint="export SMTP_PASSWORD=…; the password is read only from the environment")
        self._password = _Secret(password) if password is not None else None
        allowed = _flag(env_value(env, "SMTP_ALLOW_INSECURE_AUTH"), "SMTP_ALLOW_INSECURE_AUTH")
        if (self.username and self.security == "none" and not _loopback(self.host)
                and not (smtp.allow_insecure_auth if allowed is None else allowed)):
            raise NewsletterError(
                f"SMTP_SECURITY is none: the password for '{self.username}' would cross the network to "
                f"{self.host} in clear text",
                hint="set SMTP_SECURITY=starttls or ssl, or on a trusted network set "
                     "delivery.smtp.allow_insecure_auth = true, or SMTP_ALLOW_INSECURE_AUTH=1")

    def _secrets(self) -> tuple[str, ...]:
        """The password, and the PLAIN exchange that holds it, for the redactor (which also
        removes their base64 forms: what a server echoing the AUTH line would show)."""
        if self._password is None:
            return ()
        return self._password.value, f"\0{self.username}\0{self._password.value}"

    def _said(self, code: int, text: bytes | str) -> str:
        """A server's reply on one line, any echo of the credentials removed."""
        return redact(_reply(code, text), self._secrets())

    # -- interface -------------------------------------------------------------------

    def open(self) -> None:
        try:
            self._connect()
        except NewsletterError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
            raise NewsletterError(self._explain(exc)) from None

    def another(self) -> SmtpProvider | None:
        """One more connection like this one, for the pool; None when the server refuses it as
        one too many. Any other refusal (a login) is a NewsletterError, never retried."""
        other = SmtpProvider(self.ctx)
        try:
            other._connect()
        except NewsletterError:
            raise
        except (smtplib.SMTPResponseException, smtplib.SMTPServerDisconnected, ConnectionResetError) as exc:
            # A relay at its limit answers 421, or (some) hangs up at once: the first connection worked.
            if not isinstance(exc, smtplib.SMTPResponseException) or _crowded(exc.smtp_code, exc.smtp_error):
                said = self._said(exc.smtp_code, exc.smtp_error) if isinstance(exc, smtplib.SMTPResponseException) \
                    else type(exc).__name__
                log.info("SMTP server %s refused one more connection: %s", self.where, said)
                return None
            raise NewsletterError(self._explain(exc)) from None
        except Exception as exc:  # noqa: BLE001
            raise NewsletterError(self._explain(exc)) from None
        return other

    def send(self, batch: list[Recipient]) -> list[Outcome]:
        results: list[Outcome] = []
        for i, r in enumerate(batch):
            try:
                results.append(self._send_one(r))
            except NewsletterError as exc:
                if not results:
                    raise
                # Some of this batch went out: report them, and the rest as not sent (temporary).
                results.extend(Outcome(x.email, ok=False, error=exc.message) for x in batch[i:])
                break
        return results

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _hang_up(conn, quit=True)

    # -- connection ------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self) -> None:
        """A fresh, greeted, (TLS-wrapped,) logged-in connection; raises what smtplib raises."""
        self._discard()
        if self.security == "ssl":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls)
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            conn.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                conn.starttls(context=self._tls)
                conn.ehlo()
            if self.username:
                self._login(conn)
        except BaseException as exc:
            # Still talking (a refusal): say goodbye, as a server's log expects; else just close.
            _hang_up(conn, quit=isinstance(exc, (smtplib.SMTPResponseException, smtplib.SMTPNotSupportedError,
                                                 NewsletterError)))
            raise
        self._conn = conn
        self.connections += 1

    def _login(self, conn: smtplib.SMTP) -> None:
        """One AUTH with the best mechanism offered (MECHANISMS): smtplib's login() tries each in
        turn, so one wrong password would show as two or three failed logins (fail2ban)."""
        if not conn.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        offered = conn.esmtp_features["auth"].upper().split()
        mechanism = next((m for m in MECHANISMS if m in offered), None)
        if mechanism is None:
            raise NewsletterError(f"SMTP server {self.where} offers no login this tool can use "
                                  f"(it offers {' '.join(offered) or 'none'}; PLAIN, LOGIN or CRAM-MD5 would do)")
        assert self._password is not None
        conn.user, conn.password = self.username, self._password.value
        try:
            conn.auth(mechanism, getattr(conn, "auth_" + mechanism.lower().replace("-", "_")))
        finally:
            del conn.user, conn.password

    def _discard(self) -> None:
        """Drop the connection without QUIT (it is broken or the server is closing it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            _hang_up(conn, quit=False)

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        """A (re)connection failure worth waiting out: server down, busy, network trouble."""
        if isinstance(exc, (ssl.SSLError, smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError)):
            return False
        if isinstance(exc, (smtplib.SMTPConnectError, smtplib.SMTPHeloError)):
            return 400 <= exc.smtp_code < 500
        return isinstance(exc, (OSError, smtplib.SMTPServerDisconnected))

    def _explain(self, exc: BaseException) -> str:
        """One line naming the server and what to do; never the password."""
        where = self.where
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            msg = (f"SMTP login as '{self.username}' refused by {where}: {_reply(exc.smtp_code, exc.smtp_error)} "
                   "(check SMTP_USERNAME and SMTP_PASSWORD)")
        elif isinstance(exc, smtplib.SMTPNotSupportedError):
            msg = f"SMTP server {where} does not offer {self._not_offered(exc)}"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            msg = (f"TLS certificate check failed for SMTP server {where}: {exc.verify_message or exc.reason} "
                   f"({_cert_hint(exc)})")
        elif isinstance(exc, ssl.SSLError):
            msg = (f"TLS handshake with SMTP server {where} failed: {exc.reason or exc} "
                   "(check SMTP_SECURITY and SMTP_PORT: 465 usually wants ssl, 587 starttls)")
        elif isinstance(exc, smtplib.SMTPConnectError):
            msg = (f"SMTP server {where} refused the connection: {_reply(exc.smtp_code, exc.smtp_error)} "
                   "(try again later)")
        elif isinstance(exc, smtplib.SMTPResponseException):
            msg = f"SMTP server {where} answered {_reply(exc.smtp_code, exc.smtp_error)} while connecting"
        elif isinstance(exc, ConnectionRefusedError):
            msg = (f"cannot connect to SMTP server {where}: connection refused "
                   "(is the server running, and are SMTP_HOST and SMTP_PORT right?)")
        elif isinstance(exc, socket.gaierror):
            msg = f"cannot find SMTP server {where}: {exc.strerror or exc} (check SMTP_HOST)"
        elif isinstance(exc, TimeoutError) or (
                isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc)):
            msg = (f"SMTP server {where} did not answer within {self.timeout:g} s "
                   "(check SMTP_HOST, SMTP_PORT and any firewall)")
        elif isinstance(exc, smtplib.SMTPServerDisconnected):
            msg = (f"SMTP server {where} closed the connection while connecting "
                   "(check SMTP_SECURITY and SMTP_PORT, or try again later)")
        elif isinstance(exc, OSError):
            msg = f"cannot connect to SMTP server {where}: {exc.strerror or exc} (check SMTP_HOST and SMTP_PORT)"
        else:
            msg = f"cannot connect to SMTP server {where}: {type(exc).__name__}: {exc}"
        return redact(msg, self._secrets())

    def _not_offered(self, exc: smtplib.SMTPNotSupportedError) -> str:
        """What the server lacks, and what to change given the security already in use."""
        if "STARTTLS" in str(exc).upper():
            return "STARTTLS (set SMTP_SECURITY=ssl (port 465) or none (local relay only))"
        if self.security == "none":
            return "SMTP AUTH (login) (many servers offer login only over TLS: set SMTP_SECURITY=starttls or ssl)"
        return ("SMTP AUTH (login), even over TLS (check SMTP_PORT: 587 is the usual port for logging in; "
                "or unset SMTP_USERNAME and SMTP_PASSWORD for a relay that needs no login)")

    def _ensure_open(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        try:
            self._connect()
        except NewsletterError:
            raise
        except Exception as exc:  # noqa: BLE001
            if self._transient(exc):
                busy = isinstance(exc, smtplib.SMTPResponseException) and _crowded(exc.smtp_code, exc.smtp_error)
                raise _Retry(self._explain(exc), unreachable=True, busy=busy) from None
            raise NewsletterError(self._explain(exc)) from None
        log.info("reconnected to SMTP server %s", self.where)
        assert self._conn is not None
        return self._conn

    def _reset(self) -> None:
        """RSET after a failed transaction, so the next one starts clean; drop the connection if that fails."""
        if self._conn is None:
            return
        try:
            code, _ = self._conn.rset()
        except Exception:  # noqa: BLE001
            code = -1
        if code != 250:
            self._discard()

    # -- sending ---------------------------------------------------------------------

    def _send_one(self, r: Recipient) -> Outcome:
        try:
            msgid, data = self.message(r)
        except HeaderValueError as exc:
            return Outcome(r.email, ok=False, error=str(exc), permanent=True)
        except UnicodeEncodeError:
            return Outcome(r.email, ok=False, error="the address or a header value is not ASCII", permanent=True)
        payload = self._payload(data)
        sender = self.ctx.messages.envelope_sender(r.token) or self.from_email

        last: _Retry | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if attempt > 1:
                time.sleep(self.backoff_base * 2 ** (attempt - 2))
            try:
                result = self._attempt(r.email, msgid, payload, sender)
            except _Retry as retry:
                last = retry
                if retry.busy and self.retire is not None and self.retire():
                    self._discard()  # one connection fewer: the pool sends this message on another
                    raise Crowded(retry.error) from None
                if retry.reconnect:
                    self._discard()
                else:
                    self._reset()
                log.info("SMTP attempt %d/%d for %s failed: %s", attempt, MAX_ATTEMPTS, r.email, retry.error)
                continue
            if not result.ok:
                if result.uncertain:
                    self._discard()
                else:
                    self._reset()
            return result

        assert last is not None
        if last.unreachable:
            raise NewsletterError(
                f"lost the SMTP server {self.where} mid-send and could not reconnect after {MAX_ATTEMPTS} attempts: "
                f"{last.error}; nothing was sent to {r.email}: resume with the same `newsletter send` command "
                "once the server is back")
        return Outcome(r.email, ok=False, error=f"{last.error} (gave up after {MAX_ATTEMPTS} attempts)")

    @staticmethod
    def _payload(data: bytes) -> bytes:
        """What goes on the wire after DATA: CRLF line ends, leading dots doubled, ending CRLF.CRLF."""
        # Messages from MessageTemplate already end every line with CRLF: three counts prove it
        # far faster than the regexes rewrite it (benchmarks/RESULTS.md). With CRLF only,
        # a line starts at 0 or after "\r\n", so dot-stuffing is a replace.
        lf = data.count(b"\n")
        if lf != data.count(b"\r") or lf != data.count(b"\r\n"):
            q = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", data))
        else:
            q = data.replace(b"\r\n.", b"\r\n..") if b"\r\n." in data else data
            if q.startswith(b"."):
                q = b"." + q
        if not q.endswith(b"\r\n"):
            q += b"\r\n"
        return q + b".\r\n"

    def _attempt(self, email: str, msgid: str, payload: bytes, sender: str) -> Outcome:
        """One SMTP transaction. Returns a final Result or raises _Retry (message not accepted)."""
        conn = self._ensure_open()
        try:
            code, text = conn.mail(sender)
            self._check(code, text, "MAIL", email, sender)
            code, text = conn.rcpt(email)
            if code not in (250, 251):
                self._check(code, text, "RCPT", email)
            conn.putcmd("data")
            code, text = conn.getreply()
            if code != 354:
                self._check(code, text, "DATA", email)
        except _Refused as refused:
            return Outcome(email, ok=False, error=refused.error, permanent=True)
        except (smtplib.SMTPException, OSError) as exc:
            # Lost before any message data went out: the server cannot have accepted it.
            raise _Retry(f"connection to {self.where} lost: {exc}", reconnect=True) from None

        try:
            conn.send(payload)
        except (smtplib.SMTPException, OSError) as exc:
            # The final "." did not get out: the server never accepted this message.
            raise _Retry(f"connection to {self.where} lost while sending the message: {exc}", reconnect=True) from None

        try:
            code, text = conn.getreply()
        except (smtplib.SMTPException, OSError):
            return Outcome(email, ok=False, uncertain=True, error=UNCERTAIN)
        if code == 250:
            return Outcome(email, ok=True, message_id=msgid)
        if 400 <= code < 500:
            raise _Retry(self._said(code, text), reconnect=code == 421, busy=_crowded(code, text))
        if 500 <= code < 600:
            return Outcome(email, ok=False, error=self._said(code, text), permanent=True)
        # A reply that is not SMTP: we cannot tell whether the server took the message.
        return Outcome(email, ok=False, uncertain=True, error=f"{UNCERTAIN} (unexpected reply {self._said(code, text)})")

    def _check(self, code: int, text: bytes, stage: str, email: str, sender: str = "") -> None:
        """Raise for a reply that is not the expected success (called only when it is not)."""
        if stage == "MAIL" and code == 250:
            return
        if 400 <= code < 500:
            raise _Retry(self._said(code, text), reconnect=code == 421, busy=_crowded(code, text))
        if 500 <= code < 600:
            if stage == "MAIL":
                # The sender is refused: every message would be; stop rather than fail each address.
                self._reset()
                raise NewsletterError(
                    f"SMTP server {self.where} refused the sender {sender}: {self._said(code, text)}",
                    hint="check from_email (and delivery.return_path) in newsletter.toml is allowed for this "
                         "SMTP account")
            raise _Refused(self._said(code, text))
        raise _Retry(f"unexpected reply to {stage} from {self.where}: {self._said(code, text)}", reconnect=True)


class _Refused(Exception):
    """A 5xx for this recipient: permanent."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error
