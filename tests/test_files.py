"""files.py: every file the tool writes is written exclusively, atomically, never through a link,
with the mode asked for whatever the umask (issue 10.2)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from newsletter_mailer import files


@pytest.fixture
def umask0():
    """The most permissive umask: a mode left to it would come out 0666/0777."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
@pytest.mark.parametrize("wanted", [files.PRIVATE, files.PUBLIC])
def test_write_file_sets_the_mode_whatever_the_umask(tmp_path, umask, wanted):
    old = os.umask(umask)
    try:
        files.write_file(tmp_path / "a.txt", "héllo", wanted)
        files.write_file(tmp_path / "a.txt", b"again", wanted)  # a replacement too
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_bytes() == b"again"
    assert mode(tmp_path / "a.txt") == wanted
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind


def test_a_private_file_is_0600(tmp_path, umask0):
    files.write_file(tmp_path / "m.eml", b"To: a@example.org\r\n", files.PRIVATE)
    assert mode(tmp_path / "m.eml") == 0o600


def test_a_symlink_at_the_destination_is_replaced_not_followed(tmp_path, umask0):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    os.chmod(outside, 0o600)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "index.html").symlink_to(outside)
    files.write_file(folder / "index.html", "page", files.PUBLIC)
    assert outside.read_text() == "keep me" and mode(outside) == 0o600
    assert not (folder / "index.html").is_symlink() and (folder / "index.html").read_text() == "page"


def test_planted_links_at_every_old_predictable_temp_name_are_not_used(tmp_path, umask0):
    """The temp name is unpredictable and created with O_EXCL: links planted at guessable names
    (the old `<name>.tmp`, `.<name>.tmp`) stay untouched, and so do their targets."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "outbox"
    folder.mkdir()
    planted = [folder / "a.eml.tmp", folder / ".a.eml.tmp", folder / ".a.eml"]
    for p in planted:
        p.symlink_to(outside)
    files.write_file(folder / "a.eml", b"message", files.PRIVATE)
    assert outside.read_text() == "keep me"
    assert all(p.is_symlink() for p in planted)
    assert (folder / "a.eml").read_bytes() == b"message" and mode(folder / "a.eml") == 0o600


def test_a_temp_name_collision_is_never_written_through(tmp_path, monkeypatch):
    """Even when the random name is guessed (here: forced), O_EXCL|O_NOFOLLOW refuses the planted link
    and another name is tried."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "site"
    folder.mkdir()
    names = iter(["guessed", "guessed", "fresh"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    (folder / ".x.html.guessed.tmp").symlink_to(outside)
    files.write_file(folder / "x.html", "page")
    assert outside.read_text() == "keep me" and (folder / ".x.html.guessed.tmp").is_symlink()
    assert (folder / "x.html").read_text() == "page"


def test_a_symlinked_folder_below_root_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "index.html").write_text("keep me")
    site = tmp_path / "site"
    site.mkdir()
    (site / "issue").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError) as exc:
        files.write_file(site / "issue" / "index.html", "page", root=site)
    assert "link" in exc.value.strerror
    assert sorted(os.listdir(elsewhere)) == ["index.html"] and (elsewhere / "index.html").read_text() == "keep me"


def test_missing_folders_below_root_are_created(tmp_path, umask0):
    files.write_file(tmp_path / "site" / "a" / "b" / "c.png", b"png", root=tmp_path / "site")
    assert (tmp_path / "site" / "a" / "b" / "c.png").read_bytes() == b"png"
    assert mode(tmp_path / "site" / "a") == 0o755


def test_create_new_never_overwrites_nor_follows_a_dangling_link(tmp_path, umask0):
    outside = tmp_path / "not-yet"
    (tmp_path / "new.txt").symlink_to(outside)  # dangling: O_CREAT alone would create `outside`
    with pytest.raises(FileExistsError):
        files.create_new(tmp_path / "new.txt", "x")
    assert not outside.exists()
    (tmp_path / "real.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        files.create_new(tmp_path / "real.txt", "x")
    assert (tmp_path / "real.txt").read_text() == "mine"
    files.create_new(tmp_path / "fresh.csv", "email\n", files.PRIVATE)
    assert mode(tmp_path / "fresh.csv") == 0o600


def test_make_private_dir_is_0700_and_refuses_a_link(tmp_path, umask0):
    files.make_private_dir(tmp_path / "a" / "outbox")
    assert mode(tmp_path / "a" / "outbox") == 0o700
    (tmp_path / "a" / "outbox").chmod(0o755)
    files.make_private_dir(tmp_path / "a" / "outbox")
    assert mode(tmp_path / "a" / "outbox") == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "linked").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError):
        files.make_private_dir(tmp_path / "linked")
    assert mode(elsewhere) == 0o755
