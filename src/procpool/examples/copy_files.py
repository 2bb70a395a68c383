"""The tutorial's multi-process file copy: a pool copies a folder's files, a Manager
queue tells the parent each time one is done, and the parent prints the progress.

Run it with ``python -m procpool.examples.copy_files SRC_DIR DST_DIR``. Change the
import below to ``from multiprocessing import Pool`` and it runs the same.
(``procpool copy`` is the tool for real work: trees, metadata, resume.)
"""

from __future__ import annotations

import os
import sys
from multiprocessing import Manager
from queue import Queue

from procpool import Pool


def copy_file(name: str, src: str, dst: str, q: Queue[str]) -> None:
    with open(os.path.join(src, name), "rb") as fr, open(os.path.join(dst, name), "wb") as fw:
        while True:
            content = fr.read(1024 * 1024)
            if not content:
                break
            fw.write(content)
    q.put(name)


def main(src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    names = sorted(n for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)))
    with Manager() as manager:
        q = manager.Queue()
        p = Pool(4)
        for name in names:
            p.apply_async(copy_file, args=(name, src, dst, q))
        p.close()
        copied = 0
        while copied < len(names):
            q.get()
            copied += 1
            print("\rcopying: %.1f%%" % (copied * 100 / len(names)), end="")
        p.join()
    print()
    print("copied %d files" % copied)  # noqa: UP031 (as in the tutorial)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
