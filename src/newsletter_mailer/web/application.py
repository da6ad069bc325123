"""The reader-facing web app (`newsletter serve`): one-click unsubscribe and double opt-in sign-up.

Routes: GET/POST /u/<token> (unsubscribe), GET/POST /subscribe, GET/POST /confirm/<token>,
GET /style.css, GET /c/<token> and /o/<token> ([tracking], web/clicks.py). GETs never change anything (link scanners and previewers fetch links);
every change is committed to the audience store before the answer is sent. Tokens are
tokens.py's sealed addresses: the app needs no list and no ledger. Bad input of any kind
gets a 4xx page, never a 500 or a traceback; no address, token or secret is logged.

`create_app(...)` builds an app; `newsletter_mailer.web:app` is one built lazily from the
environment (NEWSLETTER_CONFIG, NEWSLETTER_STATE, NEWSLETTER_OUTBOX) for uvicorn/gunicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from newsletter_mailer import addresses, tokens

from newsletter_mailer.web import confirm_delivery

from newsletter_mailer.web import confirm_mail, signup

from newsletter_mailer.state import db

from newsletter_mailer.web import clicks, webhook
from newsletter_mailer.audience import clicks as click_counts
from newsletter_mailer.audience.store import Change
from newsletter_mailer.state.pool import Stores
from newsletter_mailer.state.handle import State
from newsletter_mailer.errors import NewsletterError, one_line, redact
from newsletter_mailer.render import environment, search_path
from newsletter_mailer.settings import Settings, load_settings
from newsletter_mailer.web.pages import (SecureEveryResponse, body, form, mask, message, page, redact_access_log,
                                        redact_path, stylesheet)
from newsletter_mailer.web.pages import headers as security_headers

log = logging.getLogger("newsletter_mailer.web.application")
PAGES = ("base", "message", "action", "subscribe")
_STATUS_TEXT = {400: "That request could not be understood.", 404: "There is no page at this address.",
                405: "This page cannot be used that way.", 408: "That request came too slowly: please try again.",
                413: "That request is too large.",
                429: "Too many requests: please try again in an hour."}


@dataclass
class Site:
    settings: Settings
    env: jinja2.Environment
    stores: Stores
    secret: tokens.Secrets  # the current key first, then those a rotation keeps readable
    deliver: confirm_mail.Deliver
    clock: Callable[[], float] = time.time  # the sign-up limits' and links' time (tests inject one)
    list_ids: tuple[str, ...] = ()  # State.list_ids: the stable id first
    welcome: tuple[str, ...] = ()   # the `start: confirmed` sequences a confirmed reader starts
    sequences: Any = None           # serve --sequences: the sequences Runner run every minute
    sequence_wait: Any = None       # between two runs (default a minute; tests step it)
    clicks_pruned: int = 0  # when web/clicks.py last dropped hashes past [tracking] keep_days

    @property
    def list_id(self) -> tokens.ListIds:
        return self.list_ids or self.settings.list_id_header


def guarded(handler):
    """No exception leaves a route as a 500 with a traceback in the log (which could quote input)."""
    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - the catch-all the app promises
            return failure(request, exc)
    return wrapper


def failure(request: Request, exc: BaseException) -> Response:
    """Storage trouble is ours (503, try again); anything else was made by the input (400)."""
    ours = isinstance(exc, (OSError, *db.ERRORS))
    log.error("%s %s failed: %s", request.method, redact_path(request.url.path), type(exc).__name__)
    if ours:
        return message(request, "Please try again", "Something went wrong on our side; nothing was changed.",
                       status=503)
    return message(request, "Something is wrong", _STATUS_TEXT[400], status=400)


async def http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) and 400 <= exc.status_code < 500 else 400
    response = message(request, "Something is wrong", _STATUS_TEXT.get(code, _STATUS_TEXT[400]), status=code)
    response.headers.update(getattr(exc, "headers", None) or {})  # Allow, for a 405
    if code in (408, 413):  # the rest of that body is not wanted: closed, not only answered
        response.headers["Connection"] = "close"
    return response


async def crash(request: Request, exc: Exception) -> Response:
    return failure(request, exc)


def invalid(request: Request) -> Response:
    return message(request, "This link is not valid",
                   "It may have been copied incompletely, or it has expired. Nothing was changed.",
                   status=404, link={"href": "../subscribe", "text": "Go to the sign-up form"})


def opened(request: Request, read) -> tuple[Site, tuple] | tuple[Site, None]:
    """The site and what the path's token holds (tokens.read_unsubscribe / read_confirm), or None."""
    site: Site = request.app.state.site
    return site, read(site.secret, site.list_id, request.path_params["token"])


def ask(request: Request, read, title: str, question: str, hidden: list[tuple[str, str]], button: str) -> Response:
    """The GET side of a link (unsubscribe, confirm): one question and one button, nothing changed
    (link scanners and previews fetch links); `question` is formatted with the masked address."""
    site, found = opened(request, read)
    if found is None:
        return invalid(request)
    return page(request, "web/action.html.j2", title=title, hidden=hidden, button=button,
                paragraphs=[question.format(address=mask(found[0]), name=site.settings.name)])


@guarded
async def unsubscribe_page(request: Request) -> Response:
    return ask(request, tokens.read_unsubscribe, "Unsubscribe?", "Unsubscribe {address} from {name}?",
               [("List-Unsubscribe", "One-Click"), ("via", "page")], "Unsubscribe")


@guarded
async def unsubscribe(request: Request) -> Response:
    """RFC 8058 one-click: whatever the body and its type (or none), a valid token unsubscribes."""
    site, found = opened(request, tokens.read_unsubscribe)
    if found is None:
        return invalid(request)
    email, issue = found
    data = await body(request)
    if email == tokens.PROBE:  # `newsletter doctor --online`: the endpoint works; no reader changes
        return message(request, "One-click unsubscribe works", "This was a test by newsletter doctor. "
                       "Nothing was changed.")
    source = "link" if b"via=page" in data else "one-click"
    await run_in_threadpool(_record, site, Change(email, "unsubscribed", source, issue=issue))
    return message(request, "You are unsubscribed",
                   f"{mask(email)} will receive no more emails from {site.settings.name}.",
                   "Changed your mind? You can subscribe again at any time.",
                   link={"href": "../subscribe", "text": "Subscribe again"})


def _record(site: Site, change: Change) -> None:
    """One change committed (in the thread pool: a wait for the database never stalls the loop)."""
    with site.stores.audience() as audience:
        audience.record([change])


def _confirmed(site: Site, change: Change) -> None:
    """The confirmation committed with the reader's start in each `start: confirmed` sequence; the
    reader's new consent lifts an erasure's tombstone (audience/erasure.py)."""
    from newsletter_mailer.audience import erasure
    from newsletter_mailer.sequences.members import enrol

    with site.stores.audience() as audience, audience.transaction():
        audience.apply(change)
        entry = audience.status(change.email)
        if entry is not None and entry.status == "subscribed":
            erasure.lift(audience, change.email)
            for name in site.welcome:
                enrol(audience, name, [change.email], int(site.clock()))


@guarded
async def subscribe_form(request: Request) -> Response:
    return page(request, "web/subscribe.html.j2", title=f"Subscribe to {request.app.state.site.settings.name}",
                framable=True, email="", name="", error=None)


def _clean_name(raw: str) -> str | None:
    return " ".join("".join(c for c in raw if c.isprintable()).split())[:100] or None


@guarded
async def subscribe(request: Request) -> Response:
    """Same answer for a new, pending or subscribed address: the form cannot probe the list."""
    site: Site = request.app.state.site
    fields = await form(request)
    raw, name = fields.get("email", "").strip()[:320], _clean_name(fields.get("name", ""))
    try:
        email = addresses.normalise(raw)
    except ValueError:
        email = None
    if email is None or fields.get("consent") != "yes":
        error = "Please enter a valid email address." if email is None else "Please tick the consent box."
        return page(request, "web/subscribe.html.j2", 400, title=f"Subscribe to {site.settings.name}",
                    framable=True, email=raw, name=name or "", error=error)
    if not fields.get("website"):  # the honeypot: people leave it empty
        client = request.client.host if request.client else "unknown"  # the proxy's client when trusted
        verdict = await run_in_threadpool(_sign_up, site, client, email, name)
        if verdict is signup.Verdict.LATER:
            return message(request, "Please try again later", _STATUS_TEXT[429], status=429, framable=True)
        if verdict is signup.Verdict.CONFIRM:
            await _send_confirmation(request, site, email, name)
    return message(request, "Check your inbox",  # framable: the embedded form's answer shows in its frame
                   "We have sent a confirmation link to the address you gave, unless it is already waiting "
                   "there. Open it to start receiving the newsletter.", framable=True)


def _sign_up(site: Site, client: str, email: str, name: str | None) -> signup.Verdict:
    """Counted against the limits and recorded pending (signup.py), in the thread pool."""
    with site.stores.audience() as audience:
        return signup.admit(audience, site.settings.web, client, email, name, int(site.clock()))


async def _send_confirmation(request: Request, site: Site, email: str, name: str | None) -> None:
    expires = int(site.clock()) + site.settings.web.confirm_hours * 3600
    token = tokens.make_confirm(site.secret, site.list_id, email, name, expires)  # sealed: unreadable
    link = f"{_base(request, site)}/confirm/{token}"
    data = confirm_mail.build(site.settings, site.env, email, link)
    try:
        await run_in_threadpool(site.deliver, email, data)
    except Exception as exc:  # noqa: BLE001 - the reader gets the same page; the record stays pending
        detail = re.sub(re.escape(email), "…", str(exc), flags=re.IGNORECASE)
        log.error("confirmation email not sent: %s", redact(one_line(detail)))


def _base(request: Request, site: Site) -> str:
    """web.base_url, else the address this server listens on (never the client's Host header)."""
    if site.settings.web.base:
        return site.settings.web.base
    host, port = request.scope.get("server") or ("127.0.0.1", 8080)
    return f"http://{host}:{port}"


@guarded
async def confirm_page(request: Request) -> Response:
    return ask(request, tokens.read_confirm, "Confirm your subscription", "Start receiving {name} at {address}?",
               [("confirm", "yes")], "Yes, subscribe me")


@guarded
async def confirm(request: Request) -> Response:
    site, found = opened(request, tokens.read_confirm)
    if found is None:
        return invalid(request)
    await body(request)
    await run_in_threadpool(_confirmed, site, Change(found[0], "subscribed", "form", name=found[1]))
    return message(request, "You are subscribed",
                   f"Thank you: {site.settings.name} will come to {mask(found[0])}. "
                   "Every issue has a link to unsubscribe.")


@guarded
async def sendgrid_events(request: Request) -> Response:
    """SendGrid's Event Webhook: signed batches only (webhook.py); answered once committed."""
    key = request.app.state.webhook_key
    if key is None:
        log.error("POST /hooks/sendgrid refused: %s is not set", webhook.KEY_VAR)
        return Response(status_code=503, headers=security_headers())
    data = await body(request, webhook.MAX_BODY)
    try:
        done = await run_in_threadpool(_receive, request.app.state.site, key, request.headers, data)
    except webhook.Refused as refused:
        log.warning("POST /hooks/sendgrid refused (%d): %s", refused.status, refused.why)
        return Response(status_code=refused.status, headers=security_headers())
    log.info("POST /hooks/sendgrid: %d event(s) recorded, %d seen before, %d for another unsubscribe group, "
             "%d could not be stored", done.new, done.again, done.other_group, done.unstorable)
    return Response(status_code=204, headers=security_headers())


def _receive(site: Site, key: Any, headers: Mapping[str, str], data: bytes) -> webhook.Tally:
    """webhook.receive on a store connection, in the thread pool like every write; SendGrid's clicks
    and opens counted per link with the readers' keyed hashes, dropped past keep_days as /c/ does."""
    t, secret = site.settings.tracking, site.secret
    counting = webhook.Counting(lambda issue, email: tokens.reader_key(secret, issue, email), t.per_reader)
    now = int(time.time())
    with site.stores.audience() as audience:
        done = webhook.receive(audience, key, headers, data, now, site.settings.delivery.sendgrid.asm_group_id,
                               counting)
        if now >= site.clicks_pruned + clicks.PRUNE_SECONDS:
            click_counts.forget_old(audience.db, t.keep_days, now)
            site.clicks_pruned = now
    return done


@guarded
async def style(request: Request) -> Response:
    return stylesheet(request)


ROUTES = [
    Route("/u/{token}", unsubscribe_page, methods=["GET"]),
    Route("/u/{token}", unsubscribe, methods=["POST"]),
    Route("/subscribe", subscribe_form, methods=["GET"]),
    Route("/subscribe", subscribe, methods=["POST"]),
    Route("/confirm/{token}", confirm_page, methods=["GET"]),
    Route("/confirm/{token}", confirm, methods=["POST"]),
    Route("/style.css", style, methods=["GET"]),
    Route("/hooks/sendgrid", sendgrid_events, methods=["POST"]),
    *clicks.routes(guarded),  # [tracking]: /c/<token> and /o/<token>
]


def _templates(settings_dir: Path) -> jinja2.Environment:
    """The search path's environment, every page compiled now: a broken template stops start-up."""
    env = environment(tuple(search_path(settings_dir)))
    for name in [f"web/{p}.html.j2" for p in PAGES] + ["web/style.css.j2", "web/confirm_email.txt.j2",
                                                        "web/confirm_email.html.j2"]:
        try:
            env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise NewsletterError(f"template error: {exc.message}", path=exc.filename, line=exc.lineno) from None
        except jinja2.TemplateNotFound:
            raise NewsletterError(f"template '{name}' not found", hint="looked in " + ", ".join(
                search_path(settings_dir))) from None
    return env


def create_app(config_path: Path | None, state_dir: Path | None, env: Mapping[str, str],
               deliver_confirmation: confirm_mail.Deliver | None = None, *, sequences: bool = False,
               clock: Callable[[], float] = time.time) -> Starlette:
    """The app for one newsletter; confirmations go to deliver_confirmation (default: through
    delivery.provider, checked now so a missing credential stops start-up)."""
    settings, settings_dir = load_settings(config_path)
    state = State.resolve(settings, settings_dir, env, state_dir)
    list_ids = state.list_ids(settings)  # before a secret is made: a changed id stops start-up
    secret, note = state.secrets(env)
    if note:
        log.warning("%s", note)
    outbox = Path(env["NEWSLETTER_OUTBOX"]) if env.get("NEWSLETTER_OUTBOX") else settings_dir / "outbox"
    from newsletter_mailer.sequences import model as sequences  # a broken sequence file stops start-up

    welcome = tuple(s.name for s in sequences.load_all(settings_dir) if s.start == "confirmed")
    site = Site(settings, _templates(settings_dir), state.stores(), secret,
                deliver_confirmation or confirm_delivery.configured(settings, env, outbox), list_ids=list_ids,
                welcome=welcome, clock=clock)
    if sequences:  # serve --sequences: the runner's outbox is the confirmations' (NEWSLETTER_OUTBOX)
        from newsletter_mailer.sequences.run import Runner

        site.sequences = Runner(settings, settings_dir, state, env, outbox=outbox, clock=clock)
    app = Starlette(routes=ROUTES, exception_handlers={HTTPException: http_error, Exception: crash},
                    middleware=[Middleware(SecureEveryResponse),
                                Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.web.trusted_proxies)],
                    lifespan=functools.partial(_lifespan, site))
    app.router.redirect_slashes = False  # its redirect is built from the Host header: /subscribe/ is a 404
    app.state.site = site
    app.state.webhook_key = webhook.public_key(env)
    redact_access_log()
    return app


@contextlib.asynccontextmanager
async def _lifespan(site: Site, app: Starlette) -> AsyncIterator[None]:
    """The store's pool opens when a worker starts serving and closes when it stops."""
    site.stores.open()
    task = None
    if site.sequences is not None:
        from newsletter_mailer.sequences.loop import every_minute, loop

        task = asyncio.create_task(loop(site.sequences, site.sequence_wait or every_minute))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        site.stores.close()


@functools.lru_cache(maxsize=1)
def _from_environment() -> Starlette:
    config = os.environ.get("NEWSLETTER_CONFIG")
    state = os.environ.get("NEWSLETTER_STATE")
    return create_app(Path(config) if config else None, Path(state) if state else None, os.environ,
                      sequences=os.environ.get("NEWSLETTER_SEQUENCES") == "1")


def __getattr__(name: str) -> Any:
    """`newsletter_mailer.web:app`, built on first use so importing this module reads no files."""
    if name == "app":
        return _from_environment()
    raise AttributeError(name)
