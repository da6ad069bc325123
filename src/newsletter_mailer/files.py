"""Writing files into folders others may write to: exclusively, atomically, never through a link.

Every file the tool writes goes through here. A new temporary file with an unpredictable name is
created with O_EXCL|O_NOFOLLOW in the destination's folder, its mode set with fchmod (so the
umask cannot widen or narrow it), then renamed over the destination: a symlink planted at the
destination is replaced, never followed. With `root`, every folder between root and the file is
opened with O_NOFOLLOW too, and so is root itself, so a symlinked folder (build/<slug> -> /elsewhere)
is refused.
Raises OSError; callers turn it into a NewsletterError or a per-message failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

PRIVATE = 0o600  # addresses, tokens, messages: the owner only
PUBLIC = 0o644  # build and site files, meant to be served
PRIVATE_DIR = 0o700
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def write_file(path: Path, data: bytes | str, mode: int = PUBLIC, *, root: Path | None = None,
               fsync: bool = False) -> None:
    """Replace `path` with `data` atomically (readers see the old file or the new one, whole)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path = Path(path)
    dfd = _open_parent(path, root)
    try:
        write_at(dfd, path.name, raw, mode, fsync=fsync)
    finally:
        os.close(dfd)


def open_folder(path: Path) -> int:
    """A descriptor of a folder that is not a link, for many write_at calls (the outbox holds one
    for the whole send instead of opening the folder again for every message)."""
    return _open_dir(path, None, path)


def write_at(dfd: int, name: str, raw: bytes, mode: int = PUBLIC, *, fsync: bool = False) -> None:
    """write_file inside an open folder: an exclusive temporary file, its mode set, renamed over name."""
    tmp, fd = _new_temp(dfd, name)
    try:
        _fill(fd, raw, mode, fsync)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def create_new(path: Path, data: bytes | str, mode: int = PUBLIC, *, fsync: bool = False) -> None:
    """Create `path` only if nothing (not even a dangling link) is there: FileExistsError otherwise.
    For files that must never be overwritten (init's starter files, a new confirmation mail)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, _NEW, 0o600)
    try:
        _fill(fd, raw, mode, fsync)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def read_no_follow(path: Path) -> bytes:
    """The file's bytes; ELOOP when the name itself is a symbolic link (what was checked is what is read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def make_dir(path: Path, mode: int = 0o755) -> None:
    """The folder (and missing parents) exists, is not a link, and has `mode` whatever the umask."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    fd = os.open(path, _DIR | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_mode & 0o777 != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def make_private_dir(path: Path) -> None:
    """A 0700 folder (outbox, state): what it holds names readers."""
    make_dir(path, PRIVATE_DIR)


def _fill(fd: int, raw: bytes, mode: int, fsync: bool) -> None:
    """Write everything to the open file, set its mode on the descriptor (not the name), close."""
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(raw)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def _new_temp(dfd: int, name: str) -> tuple[str, int]:
    """An exclusive `.name.<random>.tmp` in the folder: a planted file or link there is never used."""
    for _ in range(100):
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return tmp, os.open(tmp, _NEW, 0o600, dir_fd=dfd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)


def _open_parent(path: Path, root: Path | None) -> int:
    """A descriptor of the file's folder; below `root` each step is created or opened without
    following a link (ELOOP/ENOTDIR if one is planted)."""
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path.parent, _DIR)
    parts = path.parent.relative_to(root).parts
    if any(p in ("..", "") for p in parts):
        raise OSError(errno.EINVAL, "path leaves its folder", str(path))
    root.mkdir(parents=True, exist_ok=True)
    fd = _open_dir(root, None, path)  # the root too: a linked build/<slug> is refused
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            nfd = _open_dir(part, fd, path)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_dir(name: Path | str, dir_fd: int | None, path: Path) -> int:
    """A descriptor of the folder `name` (relative to dir_fd), never through a link."""
    try:
        return os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(exc.errno, "a folder on the way is a link or a file, not a folder", str(path)) from None
        raise
