"""The reader pages' plumbing: branded templates, security headers, bodies, redacted logs.

Kept apart from the routes (web.py) so each stays small. Pages are jinja2 templates
under `web/` on the templates' search path (a user's `templates/web/…` wins), with the
stylesheet served by the app itself so the CSP can forbid every inline style and script.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException

from newsletter_mailer import palette
from newsletter_mailer.colour import mix, readable
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

MAX_BODY = 64 * 1024  # a sign-up or a one-click POST is a few hundred bytes
BODY_SECONDS = 10.0  # a slow trickle of body bytes must not hold a worker
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'; "
        "base-uri 'none'")
_COMMON = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
_LOGGED = ("/", "/subscribe", "/style.css")


def headers(*, framable: bool = False, cache: str = "no-store") -> dict[str, str]:
    """Security headers: only the sign-up form may be framed (it is made to be embedded)."""
    out = dict(_COMMON, **{"Cache-Control": cache})
    out["Content-Security-Policy"] = _CSP if framable else _CSP + "; frame-ancestors 'none'"
    if not framable:
        out["X-Frame-Options"] = "DENY"
    return out


_RAW = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers().items()]


class SecureEveryResponse:
    """ASGI middleware: a response made without headers() (Starlette's own, a bare Response) gets
    them too, so no answer, error or not, can be framed, sniffed or cached."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured(event) -> None:
            if event["type"] == "http.response.start":
                have = {k.lower() for k, _ in event.get("headers", ())}
                if b"content-security-policy" not in have:
                    event["headers"] = [*event.get("headers", ()), *((k, v) for k, v in _RAW if k not in have)]
            await send(event)

        await self.app(scope, receive, secured)


def root(request: Request) -> str:
    """Relative path back to the app's root, so pages work under any prefix behind a proxy."""
    return "../" * max(request.url.path.count("/") - 1, 0)


def page(request: Request, template: str, status: int = 200, *, framable: bool = False,
         **ctx) -> HTMLResponse:
    site = request.app.state.site
    html = site.env.get_template(template).render(
        settings=site.settings, brand=site.settings.brand, root=root(request), **ctx)
    return HTMLResponse(html, status, headers=headers(framable=framable))


def stylesheet(request: Request) -> Response:
    site = request.app.state.site
    css = site.env.get_template("web/style.css.j2").render(brand=site.settings.brand, **_colours(site.settings.brand))
    return Response(css, media_type="text/css", headers=headers(cache="public, max-age=3600"))


def _colours(brand) -> dict[str, object]:
    """The stylesheet's colours: the email's palettes (light, and dark from [brand.dark]), plus the
    hint, error and field-border colours made AA (3:1 for a border) on the card in each mode."""
    light, dark = palette.light(brand), palette.dark(brand)
    return dict(light=light, dark=dark, hint=readable("#555555", light.surface),
                error=readable(brand.accent_color, light.surface),
                dark_hint=readable(mix(dark.text, dark.surface, 0.2), dark.surface),
                dark_error=readable(brand.accent_color, dark.surface), dark_border=readable("#8a8a8a", dark.background, 3.0))


def message(request: Request, title: str, *paragraphs: str, status: int = 200,
            link: dict | None = None, framable: bool = False) -> HTMLResponse:
    return page(request, "web/message.html.j2", status, framable=framable, title=title, paragraphs=paragraphs,
                link=link)


def mask(email: str) -> str:
    """`ann@…`: enough for readers to recognise their address, not a full copy on the page."""
    local = email.rsplit("@", 1)[0]
    return (local if len(local) <= 40 else local[:40] + "…") + "@…"


async def body(request: Request, limit: int = MAX_BODY, seconds: float = BODY_SECONDS) -> bytes:
    """The request body, refused with 413 once it grows past limit (declared or streamed), and
    with 408 when it has not all come within `seconds` (one byte every second would hold a worker)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413)
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408) from None
    return b"".join(chunks)


async def form(request: Request) -> dict[str, str]:
    """Fields of an urlencoded or multipart form (first value each); 400 for anything else."""
    data = await body(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async def replay() -> dict:
            return {"type": "http.request", "body": data, "more_body": False}

        parsed = await Request(request.scope, replay).form(max_files=0, max_fields=20)
        return {k: v for k, v in parsed.items() if isinstance(v, str)}
    try:
        fields = parse_qs(data.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400) from None
    return {k: v[0] for k, v in fields.items()}


def redact_path(path: str) -> str:
    """What the access log may show of a path: the route, never a token or an address."""
    path = path.split("?", 1)[0]
    for prefix in ("/u/", "/confirm/", "/c/", "/o/"):
        if path.startswith(prefix):
            return prefix + "…"
    return path if path in _LOGGED else "/…"


class RedactPaths(logging.Filter):
    """On uvicorn's access logger: its record's args are (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = args[:2] + (redact_path(args[2]),) + args[3:]
        return True


def redact_access_log() -> None:
    # python-multipart logs body bytes of a malformed form ("Expected boundary character …, got …"):
    # what a reader posted is not for the server's log.
    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactPaths) for f in logger.filters):
        logger.addFilter(RedactPaths())
