"""`newsletter inbox`'s work: classify every new message of a source and record it in the store.

Messages are handled in batches: classify, then record the batch's changes, then remember
(store) and mark (IMAP) the recognised ones, so a run killed part-way repeats at most one
batch, and repeating is harmless (statuses and soft-bounce counts are idempotent). A
message that names nobody, or that is not recognised, is neither recorded nor marked; nor is a
bounce or complaint not tied to our mail (bounces.py): anyone can write one naming anyone.
Nor is a message the parsers cannot read: it is counted as unreadable, named by its handle
(UID or key) in the lines --verbose prints, and the run goes on; every later run reads it again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

from newsletter_mailer.audience import bounces
from newsletter_mailer.audience.store import Audience, Change
from newsletter_mailer.audience.bounces import Classifier, Verdict
from newsletter_mailer.errors import one_line
from newsletter_mailer.settings import Settings
from newsletter_mailer.state.handle import State

BATCH = 200
_STATUS = {bounces.COMPLAINT: "complained", bounces.UNSUBSCRIBE: "unsubscribed"}


@dataclass
class Summary:
    read: int = 0
    already: int = 0
    bounced: int = 0
    soft: int = 0
    soft_reached: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    autoreplies: int = 0
    unrecognised: int = 0
    unmatched: int = 0  # a bounce or complaint not tied to our mail: left for a human
    unreadable: int = 0  # a message the parsers could not read: left as it was
    lines: list[str] = field(default_factory=list)  # what was (or would be) recorded, for --dry-run

    def add(self, v: Verdict) -> None:
        if v.kind == bounces.BOUNCE:
            self.bounced += v.permanent
            self.soft += not v.permanent
        elif v.kind == bounces.COMPLAINT:
            self.complaints += 1
        elif v.kind == bounces.UNSUBSCRIBE:
            self.unsubscribes += 1
        elif v.kind == bounces.AUTOREPLY:
            self.autoreplies += 1
        elif v.kind == bounces.UNMATCHED:
            self.unmatched += 1
        elif v.kind == bounces.UNREADABLE:
            self.unreadable += 1
        else:
            self.unrecognised += 1


def classifier_for(settings: Settings, state: State, env: dict[str, str]) -> Classifier:
    """Matching needs the ledger (Message-IDs) and the unsubscribe secret (tokens); neither is created."""
    from newsletter_mailer import tokens

    secret, _ = state.secrets(env, create=False)  # every key and list id a token may carry
    list_id = state.list_ids(settings, check=False, record=False)
    return Classifier(bounces.MessageIndex(state),
                      lambda token: tokens.read_unsubscribe(secret, list_id, token),
                      settings.unsubscribe_mailto)


def _usable(verdicts: list[Verdict]) -> list[Verdict]:
    """A finding that names nobody is not a finding: the message is left as if unrecognised. One
    not tied to our mail is left for a human: a forged report must not suppress a reader."""
    if verdicts and verdicts[0].kind == bounces.UNREADABLE:
        return verdicts
    named = [v for v in verdicts if v.kind == bounces.AUTOREPLY or (v.email and v.kind != bounces.UNRECOGNISED)]
    if not named:
        return [Verdict(bounces.UNRECOGNISED, reason=verdicts[0].reason if verdicts else None)]
    tied = [v for v in named if v.tied or v.kind == bounces.AUTOREPLY]
    return tied or [Verdict(bounces.UNMATCHED, named[0].email, named[0].issue,
                            reason=f"{named[0].kind} not tied to our mail (no ledger Message-ID or token): "
                                   "left for a human")]


def _changes(verdicts: list[Verdict]) -> tuple[list[Change], list[tuple[str, str | None, str | None]]]:
    changes, soft = [], []
    for v in verdicts:
        if v.kind == bounces.BOUNCE and not v.permanent:
            soft.append((v.email, v.issue, v.reason))
        elif v.kind == bounces.BOUNCE:
            changes.append(Change(v.email, "bounced", "mailbox", v.issue, v.reason))
        elif v.kind in _STATUS:
            changes.append(Change(v.email, _STATUS[v.kind], "mailbox", v.issue, v.reason))
    return changes, soft


def _line(handle: str, v: Verdict) -> str:
    """What a message said. A message nobody could read is named by its handle ("UID 17", "key …"),
    for a human to find it; the others by the reader they name (a bare "0:" means nothing)."""
    what = {bounces.BOUNCE: "bounced" if v.permanent else "soft bounce counted"}.get(v.kind, v.kind)
    who = f" {v.email}" if v.email else ""
    issue = f" (issue {v.issue})" if v.issue else ""
    where = f"{handle}: " if v.kind == bounces.UNREADABLE else ""
    return one_line(f"{where}{what}{who}{issue}" + (f": {v.reason}" if v.reason else ""))


def _batches(source) -> Iterator[list[tuple[str, str, bytes]]]:
    batch: list[tuple[str, str, bytes]] = []
    for handle, raw in source.messages():
        batch.append((handle, hashlib.sha256(raw).hexdigest(), raw))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def run(source, classifier: Classifier, audience: Audience, soft_limit: int, *, dry_run: bool,
        advance: Callable[[int], None] | None = None) -> Summary:
    """Read the source once; record (unless dry_run) and mark what was recognised."""
    summary = Summary()
    for batch in _batches(source):
        seen = audience.processed(d for _, d, _ in batch)
        found: list[Verdict] = []
        handles, digests = [], []
        for handle, digest, raw in batch:
            summary.read += 1
            if digest in seen:  # recorded by an earlier run that stopped before marking it
                summary.already += 1
                handles.append(handle)
                continue
            verdicts = _usable(classifier.classify(raw))
            for v in verdicts:
                summary.add(v)
                summary.lines.append(_line(f"{source.handle_name} {handle}", v))
            if verdicts[0].kind not in (bounces.UNRECOGNISED, bounces.UNMATCHED, bounces.UNREADABLE):
                found += verdicts
                handles.append(handle)
                digests.append(digest)
        if not dry_run:
            changes, soft = _changes(found)
            reached = audience.soft_bounces(soft, soft_limit) if soft else []
            summary.soft_reached += len(reached)
            audience.record(changes + reached)
            audience.mark_processed(digests)
            source.done(handles)
        if advance:
            advance(len(batch))
    return summary
