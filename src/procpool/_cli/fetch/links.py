"""URLs: which ones ``procpool fetch`` accepts, and the links an HTML page holds."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

SCHEMES = ("http", "https")
_MAX_LINKS = 10_000
_LINK_ATTRS = {"a": "href", "area": "href", "link": "href", "iframe": "src", "frame": "src"}


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be fetched, or None if it can (http or https, with a host)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme.lower() not in SCHEMES:
        shown = parts.scheme or "none"
        return f"unsupported scheme {shown!r}: only http and https URLs are fetched"
    if not parts.hostname:
        return "invalid URL: no host"
    return None


def host_key(url: str) -> str:
    """The politeness unit: scheme, host and port (what one server answers)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def robots_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/robots.txt"


class _LinkParser(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base":
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href.strip())
            return
        wanted = _LINK_ATTRS.get(tag)
        if wanted is None or len(self.found) >= _MAX_LINKS:
            return
        value = dict(attrs).get(wanted)
        if value:
            self.found.append(value.strip())


def extract_links(html: str, base: str) -> list[str]:
    """The http(s) links of a page, absolute, without fragments, each once, in order."""
    parser = _LinkParser(base)
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        pass
    seen: dict[str, None] = {}
    for raw in parser.found:
        url = urldefrag(urljoin(parser.base, raw))[0]
        if check_url(url) is None:
            seen.setdefault(url, None)
    return list(seen)
