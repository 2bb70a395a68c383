"""The parent's view of the work: where each source goes, what to leave out, the walk.

``pair_targets`` applies cp's rules (``cp A B``: B is the copy, unless B is a
directory, which receives A under its own name; several sources need a directory).
``check_source`` refuses what cannot be copied (a directory without -r, SRC equal to
DST, DST inside SRC, a symlink loop). ``walk`` streams the tree with ``os.scandir``,
each directory before what it holds, leaving out what the --exclude/--include rules
exclude (an excluded directory is not entered).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from procpool._cli.copy.tasks import describe


class PlanError(Exception):
    """A source (or the target) that cannot be copied: reported, the rest goes on."""


@dataclass(frozen=True, slots=True)
class Rule:
    """``--include`` (include=True) or ``--exclude`` PATTERN, in command-line order."""

    include: bool
    pattern: str

    def matches(self, rel: str, name: str) -> bool:
        """A pattern with a ``/`` matches the path below the source, others the name."""
        return fnmatch.fnmatchcase(rel if "/" in self.pattern else name, self.pattern)


def excluded(rel: str, name: str, rules: tuple[Rule, ...]) -> bool:
    """The first rule that matches decides; nothing matching means included."""
    for rule in rules:
        if rule.matches(rel, name):
            return not rule.include
    return False


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing found in a source: its kind, where it is and goes, its lstat."""

    kind: str  # "dir", "file", "symlink", "fifo" or "special" (socket, device)
    src: str
    dst: str
    rel: str  # the path below the source's root ("" for the root)
    st: os.stat_result


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "fifo" if stat.S_ISFIFO(mode) else "special"


def pair_targets(sources: list[str], dst: str, no_target_dir: bool) -> list[tuple[str, str]]:
    """Where each source goes, by cp's rules (``-T``: DST is the copy, even if it is a
    directory, so a rerun of ``copy -T a b`` goes to the same place)."""
    if no_target_dir:
        if len(sources) > 1:
            raise PlanError("-T takes one SRC (DST is its copy)")
        return [(sources[0], dst)]
    into = os.path.isdir(dst)
    if (len(sources) > 1 or dst.endswith("/")) and not into:
        raise PlanError(f"target {dst!r} is not a directory (several sources, or a "
                        "trailing /, copy into an existing directory)")  # fmt: skip
    if not into:
        return [(sources[0], dst)]
    return [(src, os.path.join(dst, os.path.basename(src.rstrip("/")) or src)) for src in sources]


def check_source(src: str, dst: str, recursive: bool) -> Entry:
    """The source's root entry, or PlanError saying why it cannot be copied.

    With -r/-a a symlink given as SRC is copied as a link (as cp -R); without, it is
    followed (so a loop is an error here)."""
    try:
        st = os.lstat(src) if recursive else os.stat(src)
    except OSError as exc:
        raise PlanError(f"cannot stat: {describe(exc)}") from None
    entry = Entry(kind_of(st.st_mode), src, dst, "", st)
    if entry.kind == "dir" and not recursive:
        raise PlanError("is a directory: not copied without -r or -a")
    if _same(src, dst):
        raise PlanError(f"SRC and DST are the same file ({dst!r}): nothing to do")
    if entry.kind == "dir":
        real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
        if real_dst.startswith(real_src.rstrip(os.sep) + os.sep):
            raise PlanError(f"cannot copy a directory into itself ({dst!r} is inside it)")
    return entry


def _same(src: str, dst: str) -> bool:
    try:
        return os.path.samefile(src, dst) and os.lstat(src).st_ino == os.lstat(dst).st_ino
    except OSError:
        return False


def walk(root: Entry, rules: tuple[Rule, ...],
         on_error: Callable[[str, str], None]) -> Iterator[Entry]:  # fmt: skip
    """The root, then everything below it, each directory before its contents."""
    yield root
    stack = [root] if root.kind == "dir" else []
    while stack:
        parent = stack.pop()
        try:
            with os.scandir(parent.src) as it:
                found = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            on_error(parent.src, f"cannot list the directory: {describe(exc)}")
            continue
        for item in found:
            rel = f"{parent.rel}/{item.name}" if parent.rel else item.name
            if excluded(rel, item.name, rules):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                on_error(item.path, f"cannot stat: {describe(exc)}")
                continue
            entry = Entry(kind_of(st.st_mode), item.path, os.path.join(parent.dst, item.name),
                          rel, st)  # fmt: skip
            yield entry
            if entry.kind == "dir":
                stack.append(entry)


def show(path: str) -> str:
    """A path fit for one line of any terminal: undecodable bytes and newlines escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text.replace("\n", "\\n").replace("\r", "\\r")
