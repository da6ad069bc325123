"""Field checks shared by the issue file (schema) and the settings (settings): one rule each.

Each check is a pydantic AfterValidator: it returns the value (perhaps normalised) or raises
ValueError with words a user can act on; sourcefile adds the file, line and field.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict

from newsletter_mailer.mergefields import EXAMPLE, MERGE_RE, SCHEMES, default_value

# What opens any Jinja construct: only the merge fields of MERGE_RE may use it in content.
JINJA_OPEN = re.compile(r"\{\{|\{%|\{#")
# Characters no text needs and MJML/XML cannot carry (a YAML "\x1b" or "\\0" escape gets them in).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
# What no header value may hold: C0 and C1 controls, DEL, and the Unicode line separators.
HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # str.splitlines' breaks
# An RFC 2047 encoded-word, matched as leniently as mail programs decode it (inside a word too).
ENCODED_WORD = re.compile(r"=\?([^?]{0,100})\?([qQbB])\?(.{0,1000}?)\?=", re.S)  # bounded: linear time
DEFAULT_MAX = 200


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not pass silently); values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def single_line(v: str) -> str:
    if "\r" in v or "\n" in v:
        raise ValueError("must be one line (no line breaks)")
    return v


def merge_fields_only(text: str) -> str:
    """Refuse template syntax other than plain merge fields, and defaults that are not plain text."""
    for m in MERGE_RE.finditer(text):
        merge_default(m.group(2))
    rest = MERGE_RE.sub("", text)
    m = JINJA_OPEN.search(rest)
    if m:
        snippet = rest[m.start(): m.start() + 30].splitlines()[0]
        raise ValueError(f"only merge fields like {EXAMPLE} are allowed, found '{snippet}'")
    return text


def content(v: str) -> str:
    """Text shown to readers: no control characters, no template syntax but merge fields."""
    bad = CONTROL.search(v)
    if bad:
        kind = "a control character" if ord(bad.group()) < 0x80 else "an invalid character"
        raise ValueError(f"contains {kind} (U+{ord(bad.group()):04X}) at position {bad.start() + 1}; remove it")
    return merge_fields_only(v)


def _word_bytes(encoding: str, text: str) -> bytes:
    """The bytes of one encoded-word's text (Q or B), never an error: judge what a reader would see."""
    if encoding in "qQ":
        return binascii.a2b_qp(text.encode("utf-8"), header=True)
    b64 = re.sub(r"[^A-Za-z0-9+/]", "", text)  # lenient, like mail programs: stray characters dropped
    b64 = b64[: len(b64) - len(b64) % 4] if len(b64) % 4 == 1 else b64 + "=" * (-len(b64) % 4)
    return base64.b64decode(b64)


def _charset_decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset.split("*")[0], "replace")  # "utf-8*en": RFC 2231 language tag
    except (LookupError, UnicodeError, ValueError):
        return data.decode("latin-1")  # an unknown charset: every control byte still shows


def decode_encoded_words(value: str) -> str:
    """value with its RFC 2047 encoded-words decoded, as the most lenient reader would.

    Adjacent words (only whitespace between) in one charset are joined before decoding, since a
    character may be split across them; unknown charsets are read as Latin-1.
    """
    out: list[str] = []
    run: list[tuple[str, bytes]] = []
    pos = 0

    def flush() -> None:
        for charset, words in itertools.groupby(run, key=lambda w: w[0].lower()):
            out.append(_charset_decode(b"".join(b for _, b in words), charset))
        run.clear()

    for m in ENCODED_WORD.finditer(value):
        gap = value[pos:m.start()]
        if gap and not (run and gap.isspace()):
            flush()
            out.append(gap)
        run.append((m.group(1), _word_bytes(m.group(2), m.group(3))))
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def _unsafe_char(text: str) -> str | None:
    bad = HEADER_UNSAFE.search(text)
    if bad is None:
        return None
    c = bad.group()
    kind = "a line break" if c in _LINE_BREAKS else "a control character"
    return f"{kind} (U+{ord(c):04X}) at position {bad.start() + 1}"


def header_problem(value: str) -> str | None:
    """Why value cannot go into a mail header, or None: the one rule for every header value.

    A header value must stay one line however it is read. Control characters (C0, DEL, C1) and
    the Unicode line separators are refused as written, and also inside RFC 2047 encoded-words
    (=?utf-8?q?=0D=0ABcc:_x?=, =?UTF-8?B?...?=): the email package, providers and mail programs
    decode those, and a decoded CR/LF becomes a header line of the writer's choosing.
    """
    if "=?" not in value and value.isprintable():
        return None  # the common case, per recipient: no control, separator or encoded-word
    found = _unsafe_char(value)
    if found:
        return f"must be one line without control characters: found {found}"
    decoded = value
    for _ in range(3):  # an encoded-word may decode to another one
        if not ENCODED_WORD.search(decoded):
            return None
        decoded = decode_encoded_words(decoded)
        found = _unsafe_char(decoded)
        if found:
            return (f"holds an encoded-word (=?…?=) that decodes to {found.split(' at ')[0]}: "
                    "mail programs would read it as a header line of its own")
    return "holds encoded-words (=?…?=) nested too deeply to check"


def header_safe(v: str) -> str:
    """pydantic validator for a value that becomes a mail header (From, Subject, List-Id …)."""
    problem = header_problem(v)
    if problem:
        raise ValueError(problem)
    return v


def merge_default(literal: str | None) -> str | None:
    """The evaluated default of a merge field, judged like a header value wherever it stands.

    A default is filled in where the reader's value goes (the subject too), and its escapes are
    only evaluated here: "x\\r\\nBcc: …" or "\\ud800" would otherwise pass every content check.
    """
    value = default_value(literal)
    if value is None:
        return None
    shown = f"default({literal[:40]}{'…' if len(literal) > 40 else ''})"
    if len(value) > DEFAULT_MAX:
        raise ValueError(f"{shown} is {len(value)} characters: a default is a few words, at most {DEFAULT_MAX}")
    problem = header_problem(value)
    bad = CONTROL.search(value)
    if problem is None and bad:
        problem = f"holds an invalid character (U+{ord(bad.group()):04X})"
    if problem:
        raise ValueError(f"{shown} {problem}")
    return value


def not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def no_merge_fields(v: str, what: str) -> str:
    """For values used as they are (an image address, a file path): a merge field would stay literal."""
    if JINJA_OPEN.search(v):
        raise ValueError(f"'{v[:60]}' must be {what}, without merge fields")
    return v


def link_problem(url: str) -> str | None:
    """Why url is not an absolute http(s) or mailto link, or None: one rule for a link in content
    and for a reader's value that decides a link (javascript:, data:, //host, " x" all fail)."""
    if not url.lower().startswith(SCHEMES) or any(c.isspace() or ord(c) < 32 for c in url):
        return "is not an http(s) or mailto link (use https://… or mailto:…)"
    if url.lower().startswith(("http://", "https://")) and len(url.split("//", 1)[1].split("/")[0]) == 0:
        return "has no host"
    return None


def link_url(v: str) -> str:
    v = v.strip()
    # A merge field may stand in a link (https://…/survey?e={{ email }}): judge the URL around it,
    # with the field's default where it has one (the default is what some readers get).
    problem = link_problem(MERGE_RE.sub(lambda m: default_value(m.group(2)) or "x", v))
    if problem:
        raise ValueError(f"'{v[:60]}' {problem}")
    return v


def http_url(v: str) -> str:
    v = link_url(v)
    if v.lower().startswith("mailto:"):
        raise ValueError(f"'{v[:60]}' must be an http(s) address")
    return no_merge_fields(v, "a plain http(s) address")


def _percent_non_ascii(text: str) -> str:
    return re.sub(r"[^\x00-\x7f]+", lambda m: quote(m.group(), safe=""), text)


def ascii_url(v: str) -> str:
    """The URL in ASCII: the host in punycode (IDNA), other non-ASCII characters percent-encoded.

    A URL that goes into a header (List-Unsubscribe, from [web] base_url or unsubscribe_url) must be
    ASCII; converted once at load time, so `check` passes only what every send can write.
    """
    if v.isascii():
        return v
    scheme, sep, rest = v.partition("://")
    if not sep:  # mailto:
        return _percent_non_ascii(v)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    host, colon, port = hostport.partition(":")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"'{v[:60]}': the host '{host[:60]}' is not a valid international domain name; "
                         "write it in punycode (xn--…)") from None
    return f"{scheme}://{_percent_non_ascii(userinfo + at)}{host}{colon}{port}{_percent_non_ascii(rest[end:])}"


OneLine = Annotated[str, AfterValidator(single_line), AfterValidator(content)]
HeaderLine = Annotated[str, AfterValidator(content), AfterValidator(header_safe)]
HttpURL = Annotated[str, AfterValidator(http_url)]
AsciiHttpURL = Annotated[str, AfterValidator(http_url), AfterValidator(ascii_url)]
