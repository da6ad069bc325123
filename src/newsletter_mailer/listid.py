"""The list's stable identifier: what reader tokens are sealed to, so a rename breaks no link.

It is the `<…>` id of List-Id (from `list_id`, or derived from the name and the from domain
when that is unset), never the display name. The state folder keeps the id in use
(`list-id`, with every whole List-Id header tokens were sealed to before ids were stable),
so a change of the id itself is caught before a send or a serve makes every delivered link
answer 404: refused unless the old id is in `[web] previous_list_ids`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from newsletter_mailer import files
from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.settings import Settings
from newsletter_mailer.state.folder import state_folder

STATE_FILE = "list-id"
MAX_HEADERS = 20  # old whole headers kept readable; one is added per rename
_ID = re.compile(r"<([^<>]+)>\s*$")


def stable_id(header: str) -> str:
    """`News <news.example.org>` → `news.example.org`; a value without <…> is its own id."""
    found = _ID.search(header)
    return (found.group(1) if found else header).strip()


def readable_ids(settings: Settings, state_dir: Path, *, check: bool = True, record: bool = True) -> tuple[str, ...]:
    """The ids reader tokens are opened with, the one new tokens are sealed to first.

    check: refuse (one line) a changed id that [web] previous_list_ids does not keep;
    record: note the id and today's whole header in the state folder (not for a dry run).
    """
    header = settings.list_id_header
    current = stable_id(header)
    previous = settings.web.previous_list_ids
    known = _read(state_dir)
    old = known.get("id")
    if check and old and old != current and old not in {stable_id(p) for p in previous}:
        hint = (f'add "{old}" to [web] previous_list_ids to keep them working' +
                ("" if settings.list_id else f', or set list_id = "{settings.name} <{old}>" to keep the id'))
        raise NewsletterError(f"the list id changed from {old} to {current}: every link already sent would stop "
                              "working", field="list_id", hint=hint)
    headers = [h for h in known.get("headers", []) if isinstance(h, str)]
    if record and (old != current or header not in headers):
        headers = ([header] + [h for h in headers if h != header])[:MAX_HEADERS]
        _write(state_dir, {"id": current, "headers": headers})
    ids = [current, *(stable_id(p) for p in previous), header, *headers, *previous]
    return tuple(dict.fromkeys(ids))


def _read(state_dir: Path) -> dict:
    path = state_dir / STATE_FILE
    try:
        data = json.loads(files.read_no_follow(path))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise NewsletterError(f"cannot read the list id record: {getattr(exc, 'strerror', None) or exc}", path=path,
                              hint="it must be a JSON file of yours, not a link; delete it to start it afresh") from None
    return data if isinstance(data, dict) else {}


def _write(state_dir: Path, data: dict) -> None:
    folder = state_folder(state_dir, create=True)
    try:
        files.write_file(folder / STATE_FILE, json.dumps(data, indent=1) + "\n", files.PRIVATE, fsync=True)
    except OSError as exc:
        raise NewsletterError(f"cannot record the list id: {exc.strerror or exc}", path=folder / STATE_FILE) from None
