"""SendGrid v3 Web API: up to 1000 recipients per mail/send request.

The content is built once per send: the composed HTML and text with every merge
slot replaced by a substitution key (one key for the HTML-escaped value, another for
the raw text value, since SendGrid applies every substitution to every content part).
Per recipient only a personalization is added: address, subject, the values behind
the keys, the issue's custom_args (and a subject test's variant, `ab`, which the Event
Webhook's events carry back) and the List-Unsubscribe headers. Payloads are plain
dicts (the library's helper classes are slower and bigger: benchmarks/RESULTS.md).

Retries: 429 waits until X-RateLimit-Reset; 5xx and errors before the request was
fully written back off and retry. A request that was written but got no answer (read
timeout, reset) may have been accepted: its recipients are reported uncertain and never
retried automatically, so nobody gets the issue twice.

Scheduling (`send --at`): a batch id is made once (POST /v3/mail/batch) and every request
carries it with `send_at`, so SendGrid holds the messages and `cancel` can stop them all
(POST /v3/user/scheduled_sends). `test-send --sandbox` sets mail_settings.sandbox_mode:
SendGrid validates the whole request and delivers nothing.

The API key is sent only in the Authorization header: it never appears in an error,
and python_http_client's debug log of request headers is redacted (errors.redact_log,
installed when the first SendGridProvider is made).
"""

from __future__ import annotations

import html
import http.client
import json
import logging
import re
import secrets
import time
import urllib.error
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit

from newsletter_mailer.errors import NewsletterError, redact, redact_log
from newsletter_mailer.message import HeaderValueError, header_value
from newsletter_mailer.providers.base import Outcome, Recipient, SendContext, backoff_base
from newsletter_mailer.validators import header_problem

if TYPE_CHECKING:
    from newsletter_mailer.personalise import Template

# One mail/send request: the JSON body in; (status, headers, body) out, whatever the status.
# Raises urllib.error.URLError when the request did not get out (nothing accepted), and
# OSError / http.client.HTTPException when it went out but no complete answer came back.
Transport = Callable[[dict], "tuple[int, Mapping[str, str] | None, bytes | str | None]"]
# Any other POST: (path under /v3, JSON body or None) in; the same answer out, raising the same.
Post = Callable[[str, "dict | None"], "tuple[int, Mapping[str, str] | None, bytes | str | None]"]

log = logging.getLogger(__name__)

DEFAULT_HOST = "https://api.sendgrid.com"
ASM_UNSUBSCRIBE_TAG = "<%asm_group_unsubscribe_raw_url%>"
MAX_ATTEMPTS = 5                 # 5xx and connection errors
MAX_RATE_LIMIT_RETRIES = 10      # 429s, each waiting at most MAX_RATE_LIMIT_WAIT
MAX_RATE_LIMIT_WAIT = 60.0
MAX_PERSONALIZATION_BYTES = 10_000   # substitutions + custom_args of one personalization
MAX_CATEGORIES = 10
KEY_HINT = "export it: create a key with Mail Send permission"
_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")   # as SendGrid's OpenAPI describes it, bounded
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


# --- content built once -----------------------------------------------------------------


def _key_prefix(texts: list[str]) -> str:
    """A substitution-key prefix found in none of the literal content (nor guessable)."""
    while True:
        prefix = "-" + "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(5))
        if not any(prefix in t for t in texts):
            return prefix


def _keyed(t: Template, key: dict[int, str], inline: dict[int, str]) -> str:
    """The template's text with each slot replaced by its key (or an inlined literal)."""
    out = [t.parts[0]]
    for i, slot in enumerate(t.slots, 1):
        out.append(inline[slot] if slot in inline else key[slot])
        out.append(t.parts[i])
    return "".join(out)


def _header_lines(block: str) -> dict[str, str]:
    """'Name: value\\r\\n...' (MessageTemplate.list_unsubscribe) as a dict."""
    out = {}
    for line in block.split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            out[name] = value
    return out


def error_detail(body: bytes | str | None) -> tuple[str, str | None]:
    """(message, field) from SendGrid's {"errors": [{"message", "field"}]} (or a Prism problem)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            message = str(first.get("message") or "no message")
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
            field = first.get("field")
            return message, str(field) if field else None
        detail = data.get("detail") or data.get("title")
        if detail:
            return str(detail), None
    text = (body or "").strip()
    return (text[:300] if text else "no details in the response"), None


def _categories(slug: str, extra: list[str]) -> list[str]:
    """The issue's slug first, then the configured ones, each once, at most MAX_CATEGORIES."""
    out: list[str] = []
    for cat in [slug, *extra]:
        if cat not in out:
            out.append(cat)
    return out[:MAX_CATEGORIES]


def api_host(env: Mapping[str, str]) -> str:
    """SENDGRID_API_HOST (default the global API), checked: the key never goes over plain http
    to anything but a local test server. Shared with the suppressions sync."""
    host = (env.get("SENDGRID_API_HOST") or DEFAULT_HOST).rstrip("/")
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NewsletterError(f"SENDGRID_API_HOST is '{host}', not an http(s) URL",
                              hint=f"use {DEFAULT_HOST} or https://api.eu.sendgrid.com")
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise NewsletterError(f"SENDGRID_API_HOST is '{host}': the API key must not travel over plain http",
                              hint="use https://; http:// is allowed only for a local test server")
    return host


def rate_limit_wait(headers: Mapping[str, str] | None, fallback: float) -> float:
    """After a 429: until X-RateLimit-Reset (a Unix time), else fallback; never over a minute."""
    reset = headers.get("X-RateLimit-Reset") if headers is not None else None
    if reset is not None:
        try:
            return min(max(float(reset) - time.time(), 0.0), MAX_RATE_LIMIT_WAIT)
        except ValueError:
            pass
    return min(fallback, MAX_RATE_LIMIT_WAIT)


class SendGridProvider:
    name = "sendgrid"
    batch_size = 1000          # personalizations per v3 mail/send request
    label = "SendGrid"
    uncertainty = "request"
    # SendGrid assigns the id (X-Message-Id, one per request) only in its answer: the ledger's
    # 'sending' row has none, and an interrupted request's rows stay without one.
    own_message_id = False
    hold_limit = timedelta(hours=72)   # SendGrid's limit on send_at

    def __init__(self, ctx: SendContext, transport: Transport | None = None,
                 sleep: Callable[[float], Any] = time.sleep, post: Post | None = None):
        """transport: one mail/send request as a function (a test's seam, like httpx's MockTransport),
        post: any other POST; by default python_http_client, made in open() once the key and host
        are checked."""
        redact_log(logging.getLogger("python_http_client.client"))  # it logs the Authorization header
        self.ctx = ctx
        self.content = content = ctx.content
        sg = ctx.settings.delivery.sendgrid
        self.asm_group_id = sg.asm_group_id
        self.timeout = float(sg.timeout)
        self.backoff_base = backoff_base(ctx.env)
        self.transport = transport
        self.post = post
        self.sleep = sleep
        self._key: str | None = None
        self.unsub_index = content.unsubscribe_slot
        # Substitution keys: escaped value for the HTML part, raw for the text part; only
        # for the slots each part uses. Under an ASM group the unsubscribe link is
        # SendGrid's own tag, the same for everyone: written into the content literally.
        inline: dict[int, str] = {}
        if self.asm_group_id is not None and self.unsub_index is not None:
            inline[self.unsub_index] = ASM_UNSUBSCRIBE_TAG
        prefix = _key_prefix([*content.html.parts, *content.text.parts, *content.subject.parts])
        self.html_keys = {i: f"{prefix}{i}h-" for i in sorted(content.html.used) if i not in inline}
        self.text_keys = {i: f"{prefix}{i}t-" for i in sorted(content.text.used) if i not in inline}
        self.base = self._base(_keyed(content.html, self.html_keys, inline),
                               _keyed(content.text, self.text_keys, inline))
        # The issue rides on every personalization's custom_args (an object there). The
        # message-level custom_args is typed "string" in SendGrid's OpenAPI description
        # while the API (and SendGrid's own Python helper) uses an object, so it is left out.
        self.custom_args = {"issue": content.slug}
        # What every personalization's size starts from: custom_args and the substitution keys.
        self._fixed_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in self.custom_args.items()) + sum(
            len(k.encode()) for k in (*self.html_keys.values(), *self.text_keys.values()))

    def _base(self, html_content: str, text_content: str) -> dict:
        """The request body but for the personalizations: the same for every batch."""
        s, c = self.ctx.settings, self.content
        sg = s.delivery.sendgrid
        subject = c.default_subject
        if not subject.strip() or "\r" in subject or "\n" in subject:
            subject = s.name
        base: dict = {
            "from": {"email": s.from_email, "name": s.from_name or s.name},
            "subject": subject,
            "content": [{"type": "text/plain", "value": text_content},
                        {"type": "text/html", "value": html_content}],
            "categories": _categories(c.slug, sg.categories),
            "headers": {"List-Id": header_value(s.list_id_header, "List-Id"),
                        "X-Newsletter-Issue": header_value(c.slug, "X-Newsletter-Issue")},
            "tracking_settings": {
                "click_tracking": {"enable": sg.tracking.click, "enable_text": sg.tracking.click},
                "open_tracking": {"enable": sg.tracking.open},
            },
        }
        if s.reply_to:
            base["reply_to"] = {"email": s.reply_to}
        if self.asm_group_id is not None:
            base["asm"] = {"group_id": self.asm_group_id}
        return base

    # --- settings and environment ---------------------------------------------------------

    def _host(self) -> str:
        return api_host(self.ctx.env)

    # --- Provider interface ---------------------------------------------------------------

    def open(self) -> None:
        """Check the key and host and make the transport; no network call."""
        if self._key is not None:
            return
        key = (self.ctx.env.get("SENDGRID_API_KEY") or "").strip()
        if not key:
            raise NewsletterError("SENDGRID_API_KEY is not set", hint=KEY_HINT)
        host = self._host()
        if self.transport is None or self.post is None:
            client = ClientTransport(key, host, self.timeout)
            self.transport = self.transport or client
            self.post = self.post or client.post
        self._key = key

    def close(self) -> None:
        pass

    def schedule(self, send_at: int) -> str:
        """A new batch id; from now on every request carries it and send_at (Unix seconds, UTC)."""
        self.open()
        batch_id = Api(self.post, self._key).create_batch()
        self.join_schedule(batch_id, send_at)
        return batch_id

    def join_schedule(self, batch_id: str, send_at: int) -> None:
        """Carry a batch id made by schedule() (another variant's provider, same send) and send_at."""
        self.base["batch_id"], self.base["send_at"] = batch_id, send_at

    def use_sandbox(self) -> None:
        """SendGrid checks the whole request (key, sender, payload) and delivers nothing."""
        self.base["mail_settings"] = {"sandbox_mode": {"enable": True}}

    def send(self, batch: list[Recipient]) -> list[Outcome]:
        if len(batch) > self.batch_size:
            raise ValueError(f"send() got {len(batch)} recipients; a SendGrid request carries at most "
                             f"{self.batch_size}")
        self.open()
        body, results = self.payload(batch)
        included = [i for i, r in enumerate(results) if r is None]
        if not included:
            return results  # type: ignore[return-value]
        status, detail = self._deliver(body)
        for i in included:
            email = batch[i].email
            if status == "ok":
                results[i] = Outcome(email, True, message_id=detail)
            elif status == "uncertain":
                results[i] = Outcome(email, False, error=detail, uncertain=True)
            else:
                results[i] = Outcome(email, False, error=detail)
        return results  # type: ignore[return-value]

    # --- payload --------------------------------------------------------------------------

    def personalization(self, r: Recipient) -> dict | str:
        """One recipient's personalization, or the reason it cannot be sent (permanent)."""
        values = r.values
        for what, v in (("address", r.email), ("name", r.name)):
            problem = header_problem(v)
            if problem:
                return f"the recipient's {what} {problem}"
        subject = self.content.subject.fill(values)
        problem = header_problem(subject)
        if problem:
            return f"the subject (from a merge value) {problem}"
        if not subject.strip():
            return "empty subject"
        subs: dict[str, str] = {}
        for i, key in self.html_keys.items():
            subs[key] = html.escape(values[i])
        for i, key in self.text_keys.items():
            subs[key] = values[i]
        size = self._fixed_bytes + len("".join(subs.values()).encode())  # UTF-8 bytes, keys + values
        if r.ab is not None:
            size += 2 + len(r.ab.encode())  # custom_args["ab"]
        if size > MAX_PERSONALIZATION_BYTES:
            return (f"merge values too large for SendGrid: {size:,} bytes of substitutions and custom_args "
                    f"(limit {MAX_PERSONALIZATION_BYTES:,} per recipient)")
        to = {"email": r.email}
        if r.name:
            to["name"] = r.name
        p: dict = {"to": [to], "subject": subject}
        if subs:
            p["substitutions"] = subs
        p["custom_args"] = {**self.custom_args, "ab": r.ab} if r.ab is not None else dict(self.custom_args)
        if self.asm_group_id is None:
            unsub = values[self.unsub_index] if self.unsub_index is not None else None
            try:
                headers = _header_lines(self.ctx.messages.list_unsubscribe(unsub or None, r.token))
            except HeaderValueError as exc:
                return str(exc)
            if headers:
                p["headers"] = headers
        return p

    def payload(self, batch: list[Recipient]) -> tuple[dict, list[Outcome | None]]:
        """The mail/send body for the batch, and per recipient a failed Outcome (left out) or None."""
        personalizations = []
        results: list[Outcome | None] = []
        for r in batch:
            try:
                p = self.personalization(r)
            except Exception as exc:  # noqa: BLE001 - one recipient's fault, before any request: never the batch's
                p = f"cannot build this recipient's message ({type(exc).__name__})"
            if isinstance(p, str):
                results.append(Outcome(r.email, False, error=p, permanent=True))
            else:
                personalizations.append(p)
                results.append(None)
        body = dict(self.base)
        body["personalizations"] = personalizations
        return body, results

    # --- the request ----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return self.backoff_base * (2 ** (attempt - 1))

    def _fail(self, message: str, hint: str | None = None) -> NewsletterError:
        return NewsletterError(self._redact(message), hint=self._redact(hint) if hint else None)

    def _redact(self, text: str) -> str:
        return redact(text, (self._key,) if self._key else ())

    def _deliver(self, body: dict) -> tuple[str, str | None]:
        """("ok", message id) | ("temporary", reason) | ("uncertain", reason); raises NewsletterError."""
        attempts = rate_limited = 0
        while True:
            try:
                status, headers, answer = self.transport(body)
            except urllib.error.URLError as e:
                # Raised while connecting or writing the request: SendGrid has not got it.
                reason = f"cannot reach SendGrid: {self._redact(str(getattr(e, 'reason', e)))}"
            except (OSError, http.client.HTTPException) as e:
                return "uncertain", self._no_answer(e, len(body["personalizations"]))
            else:
                if 200 <= status < 300:
                    return "ok", headers.get("X-Message-Id") if headers is not None else None
                if status == 429:
                    rate_limited += 1
                    if rate_limited > MAX_RATE_LIMIT_RETRIES:
                        return "temporary", f"SendGrid rate limit (429) still in force after {rate_limited} tries"
                    wait = self._rate_limit_wait(headers, rate_limited)
                    log.warning("SendGrid rate limit (429); waiting %.1f s before retrying", wait)
                    self.sleep(wait)
                    continue
                if status < 400:
                    raise self._fail(f"SendGrid answered {status} to mail/send, expected 202") from None
                if status < 500:  # a refusal of the whole request: no traceback context to show
                    raise self._client_error(status, answer, headers) from None
                reason = f"SendGrid server error {status}"
            # A 5xx, or SendGrid not reached: nothing was accepted, so back off and try again.
            attempts += 1
            if attempts >= MAX_ATTEMPTS:
                return "temporary", f"{reason} after {attempts} attempts"
            wait = self._backoff(attempts)
            log.warning("%s; retrying in %.2f s (attempt %d of %d)", reason, wait, attempts + 1, MAX_ATTEMPTS)
            self.sleep(wait)

    def _no_answer(self, e: BaseException, n: int) -> str:
        """The request was written but no (complete) answer came: it may have been accepted."""
        kind = "no answer" if isinstance(e, TimeoutError) else f"connection lost ({type(e).__name__})"
        reason = (f"{kind} from SendGrid within {self.timeout:g} s after the request was sent: "
                  f"it may have been accepted; held back, not retried")
        log.warning("%s (%d recipients)", reason, n)
        return reason

    def _rate_limit_wait(self, headers, tries: int) -> float:
        return rate_limit_wait(headers, self._backoff(tries))

    def _client_error(self, status: int, body, headers) -> NewsletterError:
        message, field = error_detail(body)
        violations = headers.get("sl-violations") if headers is not None else None
        if violations:  # a contract mock (Prism) says which rule the request broke
            try:
                message += "; contract: " + "; ".join(str(v.get("message")) for v in json.loads(violations))
            except (ValueError, AttributeError, TypeError):
                message += "; contract: " + str(violations)[:500]
        if status in (401, 403):
            return self._fail(f"SendGrid refused the API key ({status}): {message}",
                              hint="check SENDGRID_API_KEY: it needs Mail Send permission"
                              + ("; the from address must also be a verified sender" if status == 403 else ""))
        if status == 413:
            return self._fail(f"request too large for SendGrid (413): {message}",
                              hint="the whole mail/send request must stay under 30 MB: shrink the issue's HTML")
        where = f" (field {field})" if field else ""
        if status == 400:
            return self._fail(f"SendGrid rejected the request (400): {message}{where}",
                              hint="nothing more was sent; fix this and run the send again")
        return self._fail(f"SendGrid answered {status} to mail/send: {message}{where}")


class Api:
    """SendGrid's scheduling calls: one attempt each (a retry could make a second batch or meet
    an already-cancelled send); a refusal is a NewsletterError with SendGrid's message."""

    def __init__(self, post: Post, key: str):
        self.post, self.key = post, key

    @classmethod
    def from_env(cls, env: Mapping[str, str], timeout: float) -> Api:
        key = (env.get("SENDGRID_API_KEY") or "").strip()
        if not key:
            raise NewsletterError("SENDGRID_API_KEY is not set", hint=KEY_HINT)
        return cls(ClientTransport(key, api_host(env), timeout).post, key)

    def create_batch(self) -> str:
        answer = self._call("mail/batch", None, "create a batch id")
        batch_id = answer.get("batch_id") if isinstance(answer, dict) else None
        if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
            raise NewsletterError("SendGrid's answer to mail/batch has no batch id; nothing was sent")
        return batch_id

    def cancel(self, batch_id: str) -> None:
        self._call("user/scheduled_sends", {"batch_id": batch_id, "status": "cancel"}, "cancel the scheduled send")

    def _call(self, path: str, body: dict | None, what: str) -> object:
        try:
            status, headers, answer = self.post(path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise NewsletterError(f"cannot {what}: SendGrid did not answer ({type(exc).__name__})",
                                  hint="try again") from None
        if not 200 <= status < 300:
            message, _ = error_detail(answer)
            hint = "check SENDGRID_API_KEY: it needs Mail Send permission" if status in (401, 403) else None
            raise NewsletterError(redact(f"cannot {what}: SendGrid answered {status}: {message}", (self.key,)),
                                  hint=hint)
        if isinstance(answer, bytes):
            answer = answer.decode("utf-8", "replace")
        try:
            return json.loads(answer) if answer else None
        except ValueError:
            return None


class ClientTransport:
    """The real transport: SendGrid's own client (python_http_client, which raises for >= 400)."""

    def __init__(self, key: str, host: str, timeout: float):
        from sendgrid import SendGridAPIClient

        self.client = SendGridAPIClient(api_key=key, host=host)
        self.client.client.timeout = timeout  # python_http_client has none by default
        self.timeout = timeout

    def __call__(self, body: dict) -> tuple[int, Mapping[str, str] | None, bytes | str | None]:
        return self.post("mail/send", body)

    def post(self, path: str, body: dict | None) -> tuple[int, Mapping[str, str] | None, bytes | str | None]:
        from python_http_client.exceptions import HTTPError as ApiError

        node = self.client.client
        for part in path.split("/"):
            node = node._(part)
        try:
            if body is None:
                response = node.post(timeout=self.timeout)
            else:
                response = node.post(request_body=body, timeout=self.timeout)
        except ApiError as e:
            return int(e.status_code), e.headers, e.body
        return response.status_code, response.headers, response.body
