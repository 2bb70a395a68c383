"""Seeded test trees for ``procpool copy``, and a comparison of two whole trees.

Each generator writes a tree under ``root`` from ``random.Random(seed)``: the same seed
gives the same tree. ``differences(src, dst)`` lists every difference of content and
metadata (type, size, bytes, mode, ownership, mtime in ns, symlink targets, xattrs,
hardlink groups, holes of sparse files, entries missing or extra), so a test asserts
it is empty. The benchmark (benchmarks/copy) makes its trees with the same functions.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _times(rng: random.Random) -> int:
    """An mtime with a nanosecond part (to catch a copy that keeps only microseconds)."""
    return 1_600_000_000_000_000_000 + rng.randrange(10**17)


def big_file(root: Path, seed: int = 1, size: int = 3 * MIB) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "big.bin", "wb") as f:
        for offset in range(0, size, 16 * MIB):  # randbytes takes < 256 MiB at once
            f.write(rng.randbytes(min(16 * MIB, size - offset)))
    os.utime(root / "big.bin", ns=(_times(rng), _times(rng)))
    return root


def many_small(root: Path, seed: int = 2, count: int = 300, max_size: int = 8 * KIB) -> Path:
    rng = random.Random(seed)
    for i in range(count):
        folder = root / f"d{i % 10:02d}" / f"e{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / f"f{i:05d}.txt", rng.randbytes(rng.randrange(max_size)), _times(rng))
    return root


def mixed(root: Path, seed: int = 3, scale: int = 1) -> Path:
    """A few big files, some medium ones, many small ones, nested directories."""
    rng = random.Random(seed)
    many_small(root / "small", seed, 80 * scale)
    for i in range(3):
        big_file(root / "big" / str(i), seed + i, rng.randrange(1, 2 * MIB * scale))
    medium = root / "medium"
    medium.mkdir()
    for i in range(10):
        _write(medium / f"m{i}", rng.randbytes(rng.randrange(64 * KIB, 400 * KIB)), _times(rng))
    os.chmod(medium / "m0", 0o751)
    return root


def sparse(root: Path, seed: int = 4, size: int = 8 * MIB) -> Path:
    """A sparse file: holes at the start, between two data islands, and at the end."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "sparse.img"
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (size // 4, size // 2 + 12345):
            f.seek(offset)
            f.write(rng.randbytes(100 * KIB))
    os.utime(path, ns=(_times(rng), _times(rng)))
    return root


def edge_cases(root: Path, seed: int = 5, chunk: int = 64 * KIB) -> Path:
    """Symlinks (absolute, relative, dangling, looping), hardlinks across directories,
    a FIFO, odd names (non-UTF-8 bytes, a newline), a read-only directory, zero-byte
    files, files of exactly the chunk size and one byte either side, an xattr."""
    rng = random.Random(seed)
    (root / "a" / "b").mkdir(parents=True)
    (root / "other").mkdir()
    target = root / "a" / "target.txt"
    _write(target, b"target\n", _times(rng))
    os.symlink(target, root / "abs_link")
    os.symlink("a/target.txt", root / "rel_link")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("self", root / "self")
    os.symlink("a", root / "dir_link")
    for name, folder in (("h1", root / "a"), ("h2", root / "a" / "b"), ("h3", root / "other")):
        if name == "h1":
            _write(folder / name, rng.randbytes(3 * chunk + 7), _times(rng))
        else:
            os.link(root / "a" / "h1", folder / name)
    os.link(target, root / "other" / "target_again")
    os.mkfifo(root / "fifo")
    for raw in (
        b"caf\xe9-latin1",
        b"\xff\xfe-bytes",
        b"new\nline",
        b" spaced name ",
        b"-dash",
        "\u00fcnic\u00f8de".encode(),
        b"tab\there",
    ):
        _write(root / os.fsdecode(raw), rng.randbytes(rng.randrange(1, 100)), _times(rng))
    for n in (0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk):
        _write(root / f"size_{n}", rng.randbytes(n), _times(rng))
    _write(root / "empty_too", b"")
    os.setxattr(root / "size_1", "user.procpool", b"kept")
    readonly = root / "readonly"
    readonly.mkdir()
    _write(readonly / "inside", b"read-only directory's file\n", _times(rng))
    os.chmod(readonly / "inside", 0o444)
    os.utime(readonly, ns=(_times(rng), _times(rng)))
    os.chmod(readonly, 0o555)
    os.utime(root / "a" / "b", ns=(_times(rng), _times(rng)))
    return root


TREES: dict[str, Callable[[Path], Path]] = {
    "big": big_file, "small": many_small, "mixed": mixed, "sparse": sparse,
    "edge": edge_cases,
}  # fmt: skip


def _entries(root: bytes) -> Iterator[bytes]:
    """Relative paths (bytes) below ``root``, without following symlinks."""
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for item in it:
                sub = os.path.join(rel, item.name) if rel else item.name
                yield sub
                if item.is_dir(follow_symlinks=False):
                    stack.append(sub)


def _xattrs(path: bytes) -> dict[str, bytes]:
    if os.path.islink(path):
        return {}
    return {name: os.getxattr(path, name) for name in os.listxattr(path)}


def _compare(s: bytes, d: bytes, metadata: bool) -> list[str]:
    a, b = os.lstat(s), os.lstat(d)
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return [f"type {stat.S_IFMT(a.st_mode):o} != {stat.S_IFMT(b.st_mode):o}"]
    found = []
    if stat.S_ISREG(a.st_mode):
        with open(s, "rb") as f, open(d, "rb") as g:
            if f.read() != g.read():
                found.append("content")
        if a.st_blocks * 512 < a.st_size and b.st_blocks > a.st_blocks + 16:
            found.append(f"holes lost: {b.st_blocks} blocks, source {a.st_blocks}")
    if stat.S_ISLNK(a.st_mode) and os.readlink(s) != os.readlink(d):
        found.append("symlink target")
    if metadata:
        for name in ("st_mode", "st_uid", "st_gid", "st_mtime_ns"):
            if getattr(a, name) != getattr(b, name):
                found.append(f"{name} {getattr(a, name)} != {getattr(b, name)}")
        if _xattrs(s) != _xattrs(d):
            found.append(f"xattrs {_xattrs(s)} != {_xattrs(d)}")
    return found


def _link_groups(root: bytes, rels: list[bytes]) -> set[frozenset[bytes]]:
    groups: dict[tuple[int, int], set[bytes]] = {}
    for rel in rels:
        st = os.lstat(os.path.join(root, rel))
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def differences(src: Path, dst: Path, metadata: bool = True) -> list[str]:
    """Every difference between the trees (empty: a faithful copy)."""
    s_root, d_root = os.fsencode(src), os.fsencode(dst)
    s_rels, d_rels = sorted(_entries(s_root)), sorted(_entries(d_root))
    found = [f"missing: {r!r}" for r in sorted(set(s_rels) - set(d_rels))]
    found += [f"extra: {r!r}" for r in sorted(set(d_rels) - set(s_rels))]
    for rel in [b""] + [r for r in s_rels if r in set(d_rels)]:
        s, d = os.path.join(s_root, rel), os.path.join(d_root, rel)
        found += [f"{rel!r}: {what}" for what in _compare(s, d, metadata)]
    if _link_groups(s_root, s_rels) != _link_groups(d_root, d_rels):
        found.append(f"hardlinks {_link_groups(s_root, s_rels)} != {_link_groups(d_root, d_rels)}")
    return found
