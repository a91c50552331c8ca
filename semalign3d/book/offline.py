"""Static check that a built site loads nothing from the network.

Scans every HTML file for ``<script src>``, resource ``<link href>`` (stylesheets, fonts,
preloads, icons), ``<img|iframe|source|embed src>`` and CSS ``url(...)``/``@import`` in
``<style>`` blocks and ``style=`` attributes, and every CSS file for ``url(...)``/``@import``
(which covers ``@font-face``). Plain ``<a href>`` links to the web are fine: they load nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

#: ``rel`` values of ``<link>`` that make the browser fetch the target
LOADING_RELS = frozenset({
    "stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch",
    "icon", "apple-touch-icon", "manifest", "font", "import",
})
SRC_TAGS = frozenset({"script", "img", "iframe", "source", "embed", "audio", "video", "track"})
CSS_URL_RE = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)|@import\s+(['"])(.*?)\3""", re.I | re.S)


@dataclass(frozen=True)
class ExternalResource:
    """A network URL the page would load: ``kind`` is e.g. ``"<script src>"``."""

    file: Path
    kind: str
    url: str


def is_external(url: str) -> bool:
    u = url.strip().lower()
    return u.startswith(("http://", "https://", "//"))


def css_urls(css: str) -> list[str]:
    """Every ``url(...)`` and ``@import`` target of a stylesheet, in order."""
    return [m.group(2) if m.group(2) is not None else m.group(4) for m in CSS_URL_RE.finditer(css)]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag in SRC_TAGS and a.get("src"):
            self.found.append((f"<{tag} src>", a["src"]))
        if tag == "source" and a.get("srcset"):
            for part in a["srcset"].split(","):
                if part.strip():
                    self.found.append(("<source srcset>", part.split()[0]))
        if tag == "link" and a.get("href"):
            rels = set(a.get("rel", "").lower().split())
            if rels & LOADING_RELS:
                self.found.append((f"<link rel={' '.join(sorted(rels))}>", a["href"]))
        if tag == "object" and a.get("data"):
            self.found.append(("<object data>", a["data"]))
        if a.get("style"):
            self.found += [("style attribute url()", u) for u in css_urls(a["style"])]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += [("<style> url()", u) for u in css_urls(data)]


def html_resources(html: str) -> list[tuple[str, str]]:
    """``(kind, url)`` of everything an HTML document makes the browser fetch."""
    c = _Collector()
    c.feed(html)
    c.close()
    return c.found


def external_resources(site_dir: Path) -> list[ExternalResource]:
    """Every network URL loaded by the ``.html`` and ``.css`` files under ``site_dir``."""
    out: list[ExternalResource] = []
    for path in sorted(Path(site_dir).rglob("*")):
        if path.suffix in (".html", ".htm"):
            found = html_resources(path.read_text(errors="replace"))
        elif path.suffix == ".css":
            found = [("css url()", u) for u in css_urls(path.read_text(errors="replace"))]
        else:
            continue
        out += [ExternalResource(path, kind, url) for kind, url in found if is_external(url)]
    return out
