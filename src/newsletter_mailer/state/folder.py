"""The state folder (ledger, audience store, secret, locks): made or opened by this one function.

It holds every reader's address and the key that signs their links, so it must be ours alone:
a link there (`ln -s /tmp/victim .newsletter`) would put all of that in someone else's folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from newsletter_mailer.errors import NewsletterError
from newsletter_mailer.files import make_private_dir


def state_dir(settings_dir: Path, given: Path | None = None) -> Path:
    """Where the state lives: --state when given, else .newsletter/ next to newsletter.toml."""
    return given if given is not None else settings_dir / ".newsletter"


def state_folder(path: Path, *, create: bool = True) -> Path:
    """path, a real folder of ours with mode 0700 (made so, or tightened); never through a link.

    With create=False (readers: report, serve) a missing folder is left missing.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is None and not create:
        return path
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise NewsletterError("the state folder is a link: it would put the ledger, the list and the secret "
                              "wherever it points", path=path, hint="remove the link and use a real folder")
    if st is not None and st.st_uid != os.geteuid():
        raise NewsletterError("the state folder belongs to another user", path=path,
                              hint="use a folder of your own (--state)")
    try:
        make_private_dir(path)  # 0700, whatever it was: it lists readers and holds their key
    except OSError as exc:
        raise NewsletterError(f"cannot make the state folder private: {exc.strerror or exc}", path=path,
                              hint="it must be a folder of your own") from None
    return path
