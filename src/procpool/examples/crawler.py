"""The tutorial's crawler: workers fetch pages, a callback in the parent records them.

As in the tutorial, ``get_page`` runs in a pool worker and returns the page; the
``parse_page`` callback runs in the main process the moment each result arrives and
appends ``url:… size:…`` to ``db.txt``. The tutorial used ``requests``; this uses the
standard library's ``urllib.request`` so the example needs nothing installed. For real
downloads use ``procpool fetch``. Run it with
``python -m procpool.examples.crawler URL [URL ...]``.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from typing import Any

from procpool import Pool

DB = "db.txt"


def get_page(url: str) -> dict[str, Any]:
    print(f"<{os.getpid()}> is getting [{url}]")
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode("utf-8", "replace")
    print(f"<{os.getpid()}> is done [{url}]")
    return {"url": url, "text": text}


def parse_page(res: dict[str, Any]) -> None:
    """The callback: runs in the main process, once per page, as each arrives."""
    print(f"<{os.getpid()}> parse [{res['url']}]")
    with open(DB, "a") as f:
        f.write(f"url:{res['url']} size:{len(res['text'])}\n")


def main(urls: list[str]) -> None:
    p = Pool(4)
    for url in urls:
        p.apply_async(get_page, args=(url,), callback=parse_page)
    p.close()
    p.join()
    print("main", os.getpid())


def collect_all(urls: list[str]) -> list[dict[str, Any]]:
    """The tutorial's second variant: wait for every page, then collect them in order."""
    p = Pool(4)
    obj_l = [p.apply_async(get_page, args=(url,)) for url in urls]
    p.close()
    p.join()
    return [obj.get() for obj in obj_l]


if __name__ == "__main__":
    main(sys.argv[1:])
