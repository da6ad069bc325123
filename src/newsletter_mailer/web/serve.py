"""`newsletter serve`: the web app on uvicorn, one process (run more behind a proxy if needed).

Behind a reverse proxy (TLS) the client address comes from X-Forwarded-For, trusted only
from `[web] trusted_proxies` (the app applies it), so the sign-up limits count readers, not
the proxy. The socket is bound here, before uvicorn starts, so a port in use is one clear line
rather than uvicorn's log and exit; with TCP_NODELAY, which asyncio sets only on sockets it
makes itself (else keep-alive answers wait ~40 ms for an ACK). Connections run on
slow_clients.ShedSlowClients: deadlines for headers and body, a cap on connections, bounded
keep-alive.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path
from typing import Callable, Mapping

import uvicorn

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.listid import STATE_FILE
from newsletter_mailer.settings import load_settings, placeholder_host
from newsletter_mailer.state.handle import LEDGER_FILE, State
from newsletter_mailer.unsubscribe import SECRET_ENV, SECRET_FILE
from newsletter_mailer.web.application import create_app
from newsletter_mailer.web.pages import redact_access_log
from newsletter_mailer.web.slow_clients import ShedSlowClients


def _require_secret(config: Path | None, state: Path | None, env: Mapping[str, str]) -> None:
    """A secret made up now would not match the links already sent: refused once anything was sent
    (a ledger, or a list id recorded when links were sealed); on a fresh state create_app makes it."""
    if env.get(SECRET_ENV):
        return
    settings, settings_dir = load_settings(config)
    st = State.resolve(settings, settings_dir, env, state)
    state_dir = st.folder
    # On PostgreSQL the senders are elsewhere: their secret must be given, never made up here.
    sent = st.postgres or st.exists(LEDGER_FILE) or (state_dir / STATE_FILE).exists()
    if sent and not (state_dir / SECRET_FILE).is_file():
        raise NewsletterError(f"no newsletter secret: {SECRET_ENV} is not set and {state_dir / SECRET_FILE} "
                              "does not exist", hint=f"export {SECRET_ENV}=… (the sender's), or point --state "
                              "at the sender's state folder; a first `newsletter send` or `test-send` creates one")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; NewsletterError (one line) when that is impossible."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise NewsletterError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}",
                              field="--host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted connections
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = "is another server using it? pick another with --port" if exc.errno == errno.EADDRINUSE else None
        raise NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint=hint) from None
    return sock


def _exposure(address: str, base: str | None) -> list[str]:
    """What the operator should know before readers arrive: who can reach it, and where links lead."""
    lines = [f"links in emails point to {base}/…" if base else
             "warning: web.base_url is not set: links point to this address, which readers elsewhere cannot reach"]
    if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
        lines.append(f"warning: listening on {address}: reachable from other machines, in plain http; put a TLS "
                     "reverse proxy in front and listen on 127.0.0.1 behind it")
    host = placeholder_host(base)
    if host:
        lines.append(f"warning: web.base_url is on {host}, a placeholder domain: the links in emails lead nowhere; "
                     "set the app's public https address in newsletter.toml")
    return lines


def run(host: str, port: int, config: Path | None, state: Path | None, env: Mapping[str, str],
        echo: Callable[[str], None] = print, sequences: bool = False) -> None:
    _require_secret(config, state, env)
    app = create_app(config, state, env, sequences=sequences)
    sock = bind(host, port)
    where = "%s:%d" % sock.getsockname()[:2]
    base = app.state.site.settings.web.base
    echo(f"listening on http://{where} (Ctrl-C stops it)")
    if sequences:
        echo("sending the sequences' due steps every minute (sequences/)")
    for line in _exposure(sock.getsockname()[0], base):
        echo(line)
    server_config = uvicorn.Config(
        app, host=host, port=port, proxy_headers=False,  # the app believes only [web] trusted_proxies
        http=ShedSlowClients,
        server_header=False, timeout_keep_alive=5, log_level="info")
    redact_access_log()  # again: uvicorn's logging setup above must not have dropped it
    uvicorn.Server(server_config).run(sockets=[sock])
