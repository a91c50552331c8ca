"""Sphinx extension: emit each ``<script>`` of a page once.

With Sphinx 7.4, extensions that add inline scripts after the builder started (sphinx-thebe
0.3.1, sphinx-togglebutton) get them on every page twice; the second
``const THEBE_JS_URL = ...`` is a JavaScript SyntaxError in the browser console.
"""

from __future__ import annotations

from typing import Any


def _key(script: Any) -> tuple:
    attrs = getattr(script, "attributes", None) or {}
    # inline scripts come with filename None or "" depending on when they were added
    return getattr(script, "filename", None) or "", tuple(sorted(attrs.items()))


def dedupe(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        if _key(script) not in seen:
            seen.add(_key(script))
            unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, bool]:
    app.connect("html-page-context", dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
