"""What the parent does itself: directories, symlinks, FIFOs, hardlinks, the skip test.

These are a few system calls each, cheaper in the parent than a task. Directories are
made as the walk finds them (owner-writable, so their contents can go in) and get their
own mode, ownership and timestamps last (``finish_dirs``, deepest first, so adding a
file does not change a directory's mtime after it was set). Each hardlinked inode is
copied once: the first path found is copied, the others are linked to its copy after
the copies are done.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from procpool._cli.copy.plan import Entry
from procpool._cli.copy.report import Reporter, Stats
from procpool._cli.copy.tasks import Settings, apply_meta, describe, link_meta, temp_name

_OWNER_RWX = stat.S_IRWXU


@dataclass
class Placer:
    """The entries the parent handles, and what it must finish after the copies."""

    settings: Settings
    stats: Stats
    report: Reporter
    dry_run: bool
    say: Callable[[str], None]  # -v / --dry-run lines on stdout
    dirs: list[Entry] = field(default_factory=list)
    links: list[tuple[Entry, str]] = field(default_factory=list)
    inodes: dict[tuple[int, int], str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # destinations whose copy failed

    def place(self, entry: Entry) -> bool:
        """Handle ``entry`` unless it is a file to copy (True: copy it with a task)."""
        try:
            if entry.kind == "file":
                return self._file(entry)
            {"dir": self._dir, "symlink": self._symlink, "fifo": self._fifo,
             "special": self._special}[entry.kind](entry)  # fmt: skip
        except OSError as exc:
            self.report.error(entry.dst, describe(exc))
        return False

    def _file(self, entry: Entry) -> bool:
        st = entry.st
        if st.st_nlink > 1:
            first = self.inodes.setdefault((st.st_dev, st.st_ino), entry.dst)
            if first != entry.dst:
                self.links.append((entry, first))
                return False
        self.stats.files_total += 1
        self.stats.bytes_total += st.st_size
        if not self.settings.checksum and unchanged(entry):
            self.stats.files_unchanged += 1
            return False
        if self.dry_run:
            self.say(f"copy {entry.src} -> {entry.dst}")
        return not self.dry_run

    def _dir(self, entry: Entry) -> None:
        self.stats.dirs += 1
        self.dirs.append(entry)
        if self.dry_run:
            self.say(f"mkdir {entry.dst}")
            return
        try:
            os.mkdir(entry.dst, _OWNER_RWX)
        except FileExistsError:
            st = os.lstat(entry.dst)
            if not stat.S_ISDIR(st.st_mode):
                raise
            if st.st_mode & _OWNER_RWX != _OWNER_RWX:  # a read-only dir from an earlier run
                os.chmod(entry.dst, st.st_mode | _OWNER_RWX)

    def _symlink(self, entry: Entry) -> None:
        self.stats.symlinks += 1
        target = os.readlink(entry.src)
        if self.dry_run:
            self.say(f"symlink {entry.dst} -> {target}")
            return
        if os.path.islink(entry.dst) and os.readlink(entry.dst) == target:
            link_meta(entry.dst, entry.st, self.settings)
            return
        tmp = temp_name(entry.dst, "tmp")
        _remove(tmp)
        os.symlink(target, tmp)
        link_meta(tmp, entry.st, self.settings)
        os.rename(tmp, entry.dst)

    def _fifo(self, entry: Entry) -> None:
        """A FIFO is made anew (as cp -R does), never opened."""
        self.stats.fifos += 1
        if self.dry_run:
            self.say(f"mkfifo {entry.dst}")
            return
        tmp = temp_name(entry.dst, "tmp")
        _remove(tmp)
        os.mkfifo(tmp, 0o600)
        apply_meta(tmp, entry.st, entry.src, self.settings)
        os.rename(tmp, entry.dst)

    def _special(self, entry: Entry) -> None:
        self.stats.specials_skipped += 1
        what = "socket" if stat.S_ISSOCK(entry.st.st_mode) else "device file"
        self.report.note(entry.src, f"a {what}: skipped (never opened, not copied)")

    def make_hardlinks(self) -> None:
        """Link each later path of a hardlinked inode to the copy of its first path."""
        for entry, first in self.links:
            self.stats.hardlinks += 1
            if self.dry_run:
                self.say(f"link {entry.dst} => {first}")
                continue
            if first in self.failed:
                self.report.error(entry.dst, f"not linked: the copy of {first!r} failed")
                continue
            try:
                _link(first, entry.dst)
            except OSError as exc:
                self.report.error(entry.dst, f"cannot link to {first!r}: {describe(exc)}")

    def finish_dirs(self, fsync: bool) -> None:
        """Each directory's own metadata, deepest first (and an fsync with --fsync)."""
        if self.dry_run:
            return
        for entry in reversed(self.dirs):
            try:
                if fsync:
                    sync_dir(entry.dst)
                apply_meta(entry.dst, entry.st, entry.src, self.settings)
            except OSError as exc:
                self.report.error(entry.dst, f"cannot set metadata: {describe(exc)}")


def unchanged(entry: Entry) -> bool:
    """The destination is a regular file of the same size and mtime (a rerun skips it)."""
    try:
        st = os.lstat(entry.dst)
    except OSError:
        return False
    return (stat.S_ISREG(st.st_mode) and st.st_size == entry.st.st_size
            and st.st_mtime_ns == entry.st.st_mtime_ns)  # fmt: skip


def sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link(first: str, dst: str) -> None:
    try:
        if os.path.samefile(first, dst):
            return
    except OSError:
        pass
    tmp = temp_name(dst, "tmp")
    _remove(tmp)
    os.link(first, tmp)
    os.rename(tmp, dst)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
