"""GET/HEAD /c/<token> (a tracked link) and /o/<token> (the open pixel, [tracking] opens).

The token is `<link code>.<issue>.<reader pseudonym>`, or with [tracking] per_reader
`<link code>.<sealed address>` (tokens.py). The answer is a 302 to **the URL stored for that
link when the issue was sent** (audience/clicks.py), and only when the link code's MAC matches that
URL: nothing in the request decides where it goes, so there is no open redirect, and a token
altered in any way, or made for a URL other than the one sent, gets a 404 page and no redirect.
A HEAD or a known scanner's user agent is counted apart from readers (still redirected: a
scanner that is refused may flag the whole message); so is a message whose every link is
fetched within seconds (audience/clicks.py). Every fetch is committed before the answer.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter_mailer import tokens
from newsletter_mailer.audience import clicks
from newsletter_mailer.tracked_links import OPEN_LINK
from newsletter_mailer.validators import header_problem
from newsletter_mailer.web.pages import headers

# Link scanners and previewers that fetch links no reader followed (lower case, searched in the User-Agent).
SCANNERS = re.compile(r"bot\b|bot/|spider|crawler|preview|scanner|barracuda|proofpoint|mimecast|safelinks|"
                      r"urldefense|ironport|fortiguard|trendmicro|sophos|symantec|bitdefender|forcepoint|"
                      r"facebookexternalhit|slack|discord|whatsapp|skypeuripreview|python-requests|"
                      r"go-http-client|curl/|wget/|libwww|okhttp|java/|httpclient")
PRUNE_SECONDS = 3600  # how often the keyed hashes past keep_days are dropped
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def is_scanner(request: Request) -> bool:
    return request.method == "HEAD" or bool(SCANNERS.search(request.headers.get("user-agent", "").lower()))


def _opened(request: Request, pixel: bool) -> tuple[str, str, str | None, str, int, str | None] | None:
    """(issue, reader key, address or None, link code, (link id, links in the message), variant) from the path's token, or None
    for anything that does not open. `<code>.<issue>.<pseudonym>` carries no address (the default);
    `<code>.<sealed address>` is [tracking] per_reader's (and every token sent before the pseudonym)."""
    site = request.app.state.site
    code, dot, reader = request.path_params["token"].partition(".")
    claimed = tokens.read_link_code(code) if dot else None
    if claimed is None or (claimed[0] == OPEN_LINK) != pixel:
        return None
    issue, dot, pseudonym = reader.rpartition(".")
    if dot:
        found = tokens.read_click_pseudonym(site.secret, site.list_id, issue, pseudonym) if issue else None
        return (issue, found[0], None, code, claimed, found[1]) if found else None
    sealed = tokens.read_click_reader(site.secret, site.list_id, reader)
    if sealed is None:
        return None
    issue, email, variant = sealed
    return issue, tokens.reader_key(site.secret, issue, email), email, code, claimed, variant


def _follow(site, issue: str, reader: str, email: str | None, code: str, claimed: tuple[int, int],
            variant: str | None, scanner: bool, now: int) -> str | None:
    """The stored URL the code was made for (None: no redirect), the fetch counted, in the thread pool.
    claimed: (link id, tracked links in the reader's message, 0 for a code made before it was carried)."""
    t = site.settings.tracking
    link, in_message = claimed
    with site.stores.audience() as audience:
        db = audience.db
        if link == OPEN_LINK:
            url = ""
        else:
            url = next((u for u in clicks.urls(db, issue, link)
                        if tokens.check_link_code(site.secret, site.list_id, issue, code, u)), None)
            if url is None or header_problem(url):
                return None
        if link == OPEN_LINK and not tokens.check_link_code(site.secret, site.list_id, issue, code, ""):
            return None
        clicks.record(db, issue, link, reader, scanner=scanner, now=now, email=email if t.per_reader else None,
                      variant=variant if variant in ("A", "B") else None, in_message=in_message or None)
        if now >= site.clicks_pruned + PRUNE_SECONDS:
            clicks.forget_old(db, t.keep_days, now)
            site.clicks_pruned = now
    return url


async def _fetch(request: Request, pixel: bool) -> Response:
    from newsletter_mailer.web.application import invalid

    site = request.app.state.site
    found = _opened(request, pixel)
    if found is None:
        return invalid(request)
    url = await run_in_threadpool(_follow, site, *found, is_scanner(request), int(site.clock()))
    if url is None:
        return invalid(request)
    if pixel:
        return Response(PIXEL, media_type="image/gif", headers=headers())
    location = url if url.isascii() else quote(url, safe=":/?#[]@!$&'()*+,;=%~")  # a header is ASCII
    return Response(status_code=302, headers={**headers(), "Location": location, "Referrer-Policy": "no-referrer"})


async def follow(request: Request) -> Response:
    return await _fetch(request, pixel=False)


async def pixel(request: Request) -> Response:
    return await _fetch(request, pixel=True)


def routes(guarded) -> list[Route]:
    return [Route("/c/{token}", guarded(follow), methods=["GET", "HEAD"]),
            Route("/o/{token}", guarded(pixel), methods=["GET", "HEAD"])]
