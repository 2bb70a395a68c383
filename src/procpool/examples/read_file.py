"""The tutorial's several processes reading one file: each reads its own byte range
(from the first line that starts in it to the last), counts its lines and words, and a
callback adds them up in the parent.

Run it with ``python -m procpool.examples.read_file FILE``. Change the import below to
``from multiprocessing import Pool`` and it runs the same. (``procpool scan`` is the
tool for real work: grep, chunk hashes, speed.)
"""

from __future__ import annotations

import os
import sys

from procpool import Pool


def read_part(path: str, start: int, end: int) -> tuple[int, int]:
    lines = words = 0
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # that line belongs to the part before
        while f.tell() < end:
            line = f.readline()
            if not line:
                break
            lines += 1
            words += len(line.split())
    return lines, words


def main(path: str) -> None:
    size = os.path.getsize(path)
    parts = 4
    step = size // parts + 1
    totals = [0, 0]

    def add(result: tuple[int, int]) -> None:
        totals[0] += result[0]
        totals[1] += result[1]

    p = Pool(parts)
    for i in range(parts):
        p.apply_async(read_part, args=(path, i * step, min((i + 1) * step, size)), callback=add)
    p.close()
    p.join()
    print("lines: %d, words: %d" % (totals[0], totals[1]))  # noqa: UP031 (the tutorial's)


if __name__ == "__main__":
    main(sys.argv[1])
