"""The subscriber list: a CSV read as a stream, checked row by row, each address sent once.

A million-row list must not sit in memory: rows are yielded as they are read and only
the set of addresses already seen (for dedupe) grows. Rows that will not be sent are
counted by reason, with their line numbers, so the user can fix the file.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path

from newsletter_mailer import addresses
from newsletter_mailer.csvcells import restore
from newsletter_mailer.errors import NewsletterError, one_line, unreadable

RESERVED = ("email", "name", "status", "tags")
# The headers an address column goes by: ours, listmonk's (email), Mailchimp's (Email Address) and
# other tools' exports. One table for `send --list`, --suppress files and `audience import`.
EMAIL_COLUMNS = ("email", "email address", "e-mail", "e-mail address", "email_address")
REASONS = ("invalid", "duplicate", "unsubscribed", "bounced", "suppressed", "not tagged")
KEEP_LINES = 1000  # line numbers kept per reason; the count is always complete
_MAX_LINE = 1 << 22  # characters; a longer physical line is a broken file, not a subscriber
# C0 (but tab, harmless in a display name), DEL and C1 controls: each could break or rewrite a
# header line or the terminal, so such a name is refused, never cleaned. (U+2028/9 are encoded.)
_CTRL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]").search
_SPACE_OR_HYPHEN = re.compile(r"[\s-]")
_READ_ERRORS = (UnicodeDecodeError, csv.Error, OSError)


def merge_name(header: str) -> str:
    """The merge field a column header feeds: "School Year" -> "school_year"."""
    return _SPACE_OR_HYPHEN.sub("_", header.strip().lower())


@dataclass(slots=True)
class Subscriber:
    email: str  # normalised
    name: str
    fields: dict[str, str]  # merge columns (normalised names) -> value
    tags: frozenset[str]  # lowercased
    line: int


@dataclass
class Skips:
    """Rows not sent, by reason; line lists are capped so a broken million-row file stays small."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)

    def add(self, reason: str, line: int, detail: str | None = None) -> None:
        n = self.counts.get(reason, 0)
        self.counts[reason] = n + 1
        if n < KEEP_LINES:
            self.lines.setdefault(reason, []).append(line)
            if detail is not None:  # quotes cells of the file: printable, one line, always
                self.details[line] = one_line(detail)

    def total(self) -> int:
        return sum(self.counts.values())

    def invalid_listing(self, shown: int) -> str:
        """The first invalid rows with their reasons: "line 3: 'x': no @-sign; line 7"."""
        return "; ".join(f"line {n}: {self.details[n]}" if n in self.details else f"line {n}"
                         for n in self.lines.get("invalid", [])[:shown])

    def summary_lines(self, shown: int = 10) -> list[str]:
        """One line per reason, e.g. "duplicate: 3 (lines 9, 12, 40)"; long lists end "… and N more"."""
        out = []
        for reason in sorted(self.counts, key=lambda r: (REASONS + (r,)).index(r)):
            count, lines = self.counts[reason], self.lines.get(reason, [])
            if reason == "invalid":
                first = lines[:5]
                listing = self.invalid_listing(5)
            else:
                first = lines[:shown]
                listing = ("line " if len(first) == 1 else "lines ") + ", ".join(map(str, first))
            more = count - len(first)
            out.append(f"{reason}: {count} ({listing}{f' … and {more} more' if more else ''})")
        return out


class Suppressions(frozenset):
    """Suppressed addresses (normalised, lowercased), plus how many lines were not addresses."""

    invalid: int = 0


class SubscriberList:
    """A subscriber CSV; each iteration re-reads the file with fresh dedupe and fresh skips.

    A row with a valid address claims that address even when it is itself skipped, so a
    later row cannot resurrect an address an earlier row marked unsubscribed or bounced.
    `suppress` holds normalised, lowercased addresses, as read_suppressions returns them.
    `allow_local_domains` accepts intranet addresses (user@localhost, .test, .internal) for a
    private relay. A full pass over rows none of which is valid raises: a broken list, not
    "nothing to send".
    """

    def __init__(self, path: Path, *, tag: str | None = None,
                 suppress: frozenset[str] = frozenset(), allow_local_domains: bool = False):
        self.path = Path(path)
        self.allow_local = allow_local_domains
        self.tag = tag.strip().lower() if tag else None
        self.suppress = suppress
        self.skips = Skips()
        self.claimed: set[str] = set()
        with _open(self.path) as f:
            reader = csv.reader(_lines(f, self.path))
            try:
                layout = _header(self.path, reader)
            except _READ_ERRORS as exc:
                raise _read_error(self.path, reader, exc) from None
        self.columns = frozenset(layout[4])

    def __iter__(self) -> Iterator[Subscriber]:
        self.skips = Skips()
        with _open(self.path) as f:
            reader = csv.reader(_lines(f, self.path))
            try:
                rows = self._rows(reader)
                first = next(rows, None)  # not a counter in the per-row loop
                if first is None:
                    self._refuse_if_all_invalid()
                    return
                yield first
                yield from rows
            except _READ_ERRORS as exc:
                raise _read_error(self.path, reader, exc) from None

    def _rows(self, reader) -> Iterator[Subscriber]:
        ei, ni, si, ti, names, idxs, width = _header(self.path, reader)
        get_fields = _field_getter(idxs)
        check = partial(addresses.check, allow_local=True) if self.allow_local else addresses.check
        ctrl, suppress, want = _CTRL, self.suppress, self.tag
        skip = self.skips.add
        seen: set[str] = set()
        self.claimed = seen  # every valid address, sent or skipped
        tag_cache: dict[str, frozenset[str]] = {}
        no_tags: frozenset[str] = frozenset()
        line = reader.line_num
        try:
            for row in reader:
                start, line = line + 1, reader.line_num
                if not row:
                    continue
                if len(row) < width:
                    row += [""] * (width - len(row))
                raw = row[ei].strip()  # a spreadsheet-safe cell of `audience export` (csvcells.py) restored
                raw = restore(raw) if raw[:1] == "'" else raw
                if not raw:
                    if any(c.strip() for c in row):
                        skip("invalid", start, "no email address")
                    continue
                try:
                    email = check(raw)
                except ValueError as exc:
                    skip("invalid", start, f"'{raw[:60]}': {exc}")
                    continue
                key = email.lower()
                if key in seen:
                    skip("duplicate", start)
                    continue
                seen.add(key)
                if si is not None and (status := row[si]) and status != "subscribed":
                    why = _status_skip(status)
                    if why is not None:
                        skip(why[0], start, why[1])
                        continue
                name = row[ni].strip() if ni is not None else ""
                name = restore(name) if name[:1] == "'" else name
                if not name.isprintable() and ctrl(name):
                    skip("invalid", start, "the name contains a line break or control character")
                    continue
                if key in suppress:
                    skip("suppressed", start)
                    continue
                tags = no_tags
                if ti is not None and (cell := row[ti]):
                    tags = tag_cache.get(cell) or _tags(cell, tag_cache)
                if want is not None and want not in tags:
                    skip("not tagged", start)
                    continue
                values = [v.strip() for v in get_fields(row)]
                yield Subscriber(email, name, dict(zip(names, values)), tags, start)
        except csv.Error as exc:  # name the line the broken record starts on, not where csv gave up
            hint = "a quoted field may be missing its closing quote" if "limit" in str(exc) else None
            raise NewsletterError(f"CSV error: {exc}", path=self.path, line=line + 1,
                                  hint=hint) from None

    def _refuse_if_all_invalid(self) -> None:
        """Every row refused as invalid (not unsubscribed, suppressed…): the list itself is wrong."""
        invalid = self.skips.counts.get("invalid", 0)
        if not invalid or invalid != self.skips.total():
            return
        local = not self.allow_local and any(
            "special-use" in d or "should have a period" in d for d in self.skips.details.values())
        raise NewsletterError(
            f"no valid subscriber ({invalid} row{'s' if invalid > 1 else ''} refused: "
            f"{self.skips.invalid_listing(3)})", path=self.path,
            hint="for a private relay's intranet addresses set delivery.allow_local_domains = true"
            if local else None)


def _field_getter(idxs: list[int]):
    """row -> tuple of the merge columns' cells, the fastest way for 0, 1 or more columns."""
    if len(idxs) > 1:
        return itemgetter(*idxs)
    return (lambda row: (row[idxs[0]],)) if idxs else (lambda row: ())


def _status_skip(cell: str) -> tuple[str, str | None] | None:
    """(skip reason, detail) for a status cell that is not "subscribed" (or empty), else None."""
    status = cell.strip().lower()
    if status in ("unsubscribed", "bounced"):
        return status, None
    if status and status != "subscribed":
        return "invalid", f"unknown status '{cell.strip()[:40]}' (use subscribed, unsubscribed or bounced)"
    return None


def _tags(cell: str, cache: dict[str, frozenset[str]]) -> frozenset[str]:
    """A tags cell's lowercased tags; a list has few distinct cells, so they are cached (up to 4096)."""
    tags = frozenset(t.strip().lower() for t in cell.split(";") if t.strip())
    if len(cache) < 4096:
        cache[cell] = tags
    return tags


def read_suppressions(paths: Iterable[Path], *, allow_local_domains: bool = False) -> Suppressions:
    """Addresses never to mail: files of one address a line, or CSVs with an `email` column.

    Lines that are not addresses are ignored (a suppression list only ever removes
    recipients) but counted, so the caller can say so. Read with the list's
    allow_local_domains, or an intranet address would be ignored here yet mailed there.
    """
    found: set[str] = set()
    invalid = 0
    for path in paths:
        path = Path(path)
        with _open(path) as f:
            reader = csv.reader(_lines(f, path))
            try:
                invalid += _read_suppression(path, reader, found, allow_local_domains)
            except _READ_ERRORS as exc:
                raise _read_error(path, reader, exc) from None
    result = Suppressions(found)
    result.invalid = invalid
    return result


def _read_suppression(path: Path, reader, found: set[str], allow_local: bool) -> int:
    """Add one file's addresses to found; returns how many lines were not addresses."""
    invalid, col, first = 0, 0, True
    for row in reader:
        if not any(c.strip() for c in row):
            continue
        if first:
            first = False
            if len(row) > 1 or row[0].strip().lower() in EMAIL_COLUMNS:  # a CSV with a header
                heads = [h.strip().lower() for h in row]
                col = next((heads.index(h) for h in EMAIL_COLUMNS if h in heads), None)
                if col is None:
                    raise NewsletterError("no 'email' column; the header row must name one",
                                          path=path, line=reader.line_num, hint="e.g. email or Email Address")
                continue
        cell = row[col].strip() if col < len(row) else ""
        if not cell:
            continue
        try:
            found.add(addresses.check(cell, allow_local).lower())
        except ValueError:
            invalid += 1
    return invalid


def _open(path: Path):
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise unreadable(path, exc) from None


def _lines(f, path: Path) -> Iterator[str]:
    """The file's physical lines, refusing NUL bytes and endless lines (csv would accept both)."""
    for n, line in enumerate(iter(partial(f.readline, _MAX_LINE), ""), 1):
        if "\x00" in line:
            raise NewsletterError("contains a NUL byte", path=path, line=n,
                                  hint="save the file as plain UTF-8 CSV")
        if len(line) >= _MAX_LINE:
            raise NewsletterError(f"line is longer than {_MAX_LINE} characters", path=path,
                                  line=n, hint="is this really a CSV file?")
        yield line


def _read_error(path: Path, reader, exc: Exception) -> NewsletterError:
    """One clean error for a file that cannot be decoded, parsed or read."""
    if isinstance(exc, UnicodeDecodeError):
        return NewsletterError("is not UTF-8 text", path=path, line=_bad_utf8_line(path),
                               hint="save the file as UTF-8: in Excel, CSV UTF-8")
    if isinstance(exc, csv.Error):
        hint = "a quoted field may be missing its closing quote" if "limit" in str(exc) else None
        return NewsletterError(f"CSV error: {exc}", path=path, line=reader.line_num, hint=hint)
    return NewsletterError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", path=path)


def _bad_utf8_line(path: Path) -> int | None:
    """The line of the first byte that is not UTF-8 (error path only, so a second read is fine).

    Read in chunks, not lines: a broken file may have no line breaks at all.
    """
    def breaks(data: bytes) -> int:  # csv's newline="" counts \r\n, \r and \n as one line each
        return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")

    decoder = codecs.getincrementaldecoder("utf-8")()
    line, last = 1, b""
    try:
        with open(path, "rb") as f:
            for chunk in iter(partial(f.read, 1 << 16), b""):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:  # exc.object: held-back bytes (never \r or \n) + chunk
                    return line + breaks(last + exc.object[: exc.start]) - breaks(last)
                line += breaks(last + chunk) - breaks(last)
                last = chunk[-1:]
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:  # a character cut short at the very end
        return line
    except OSError:
        return None
    return None


def _header(path: Path, reader) -> tuple:
    """Column positions from the header row; raises when it cannot be a subscriber list."""
    for row in reader:
        if any(c.strip() for c in row):
            break
    else:
        raise NewsletterError("is empty; the first row must be a header naming an 'email' column",
                              path=path)
    line = reader.line_num
    seen: dict[str, str] = {}
    for cell in row:
        if not cell.strip():
            continue
        key = merge_name(cell)
        if key in seen:
            raise NewsletterError(f"columns '{seen[key].strip()[:60]}' and '{cell.strip()[:60]}' both mean "
                                  f"'{key[:60]}'", path=path, line=line, hint="rename or remove one")
        seen[key] = cell
    email = next((k for k in map(merge_name, EMAIL_COLUMNS) if k in seen), None)
    if email is None:
        hint = ("the file looks ';'-separated; save it as comma-separated CSV"
                if len(row) == 1 and ";" in row[0] else "e.g. email or Email Address")
        raise NewsletterError("no 'email' column; the header row must name one",
                              path=path, line=line, hint=hint)
    pos = {merge_name(c): i for i, c in enumerate(row) if c.strip()}
    names = [k for k in pos if k not in RESERVED and k != email]
    return (pos[email], pos.get("name"), pos.get("status"), pos.get("tags"),
            names, [pos[k] for k in names], len(row))
