"""The book's table of contents (Jupyter Book 1.x ``_toc.yml``) and the chapters it lists.

A *chapter* is a toc page that is a notebook: a MyST markdown file whose front matter has a
``kernelspec`` (jupytext format) or an ``.ipynb``. Chapters are named by their file stem
(``01_overview``), which must be unique in the book.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".md", ".ipynb")


class BookError(RuntimeError):
    """The book's sources, parameters or build failed; the message names the file or chapter."""


@dataclass(frozen=True)
class Chapter:
    """One notebook page of the book.

    Attributes:
        name: file stem, e.g. ``"02_data"``; the key in ``params.yaml``.
        entry: the toc ``file:`` value without suffix, e.g. ``"chapters/02_data"``.
        source: the MyST markdown (or ipynb) file.
    """

    name: str
    entry: str
    source: Path


def read_toc(book_dir: Path) -> dict[str, Any]:
    path = book_dir / "_toc.yml"
    try:
        toc = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise BookError(f"{path}: no table of contents (is --book the book folder?)") from e
    except yaml.YAMLError as e:
        raise BookError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(toc, dict) or "root" not in toc:
        raise BookError(f"{path}: expected a Jupyter Book toc with a 'root' entry")
    return toc


def _entries(node: Any, where: str) -> list[str]:
    """Every ``file:`` of a toc subtree, in reading order."""
    out: list[str] = []
    items = node if isinstance(node, list) else [node]
    for item in items:
        if not isinstance(item, dict):
            raise BookError(f"{where}: unexpected toc item {item!r}")
        if "glob" in item:
            raise BookError(f"{where}: 'glob' entries are not supported; list each file")
        if "file" in item:
            out.append(_strip_suffix(str(item["file"])))
        for key in ("parts", "chapters", "sections"):
            if key in item:
                out.extend(_entries(item[key], where))
    return out


def _strip_suffix(entry: str) -> str:
    for s in SUFFIXES:
        if entry.endswith(s):
            return entry[: -len(s)]
    return entry


def toc_entries(toc: dict[str, Any], where: str = "_toc.yml") -> list[str]:
    """The toc's pages (root first) as suffix-less paths relative to the book folder."""
    return [_strip_suffix(str(toc["root"]))] + _entries(
        {k: v for k, v in toc.items() if k in ("parts", "chapters")}, where
    )


def source_of(book_dir: Path, entry: str) -> Path:
    """The file a toc entry refers to (``.md`` or ``.ipynb``; exactly one must exist)."""
    found = [book_dir / f"{entry}{s}" for s in SUFFIXES if (book_dir / f"{entry}{s}").is_file()]
    if not found:
        raise BookError(f"{book_dir / '_toc.yml'}: page '{entry}' has no .md or .ipynb file")
    if len(found) > 1:
        raise BookError(f"{book_dir}: page '{entry}' exists as both {found[0].name} and "
                        f"{found[1].name}; keep one (the MyST .md is the source)")
    return found[0]


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a markdown file (``{}`` if none)."""
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        raise BookError(f"{path}: front matter opened with '---' is never closed")
    try:
        meta = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError as e:
        raise BookError(f"{path}: invalid front matter: {e}") from e
    return meta if isinstance(meta, dict) else {}


def is_notebook(path: Path) -> bool:
    return path.suffix == ".ipynb" or "kernelspec" in front_matter(path)


def chapters(book_dir: Path) -> list[Chapter]:
    """The notebook pages of the toc, in reading order."""
    book_dir = Path(book_dir)
    out: list[Chapter] = []
    seen: dict[str, str] = {}
    for entry in toc_entries(read_toc(book_dir), str(book_dir / "_toc.yml")):
        src = source_of(book_dir, entry)
        if not is_notebook(src):
            continue
        name = Path(entry).name
        if name in seen:
            raise BookError(f"{book_dir / '_toc.yml'}: chapters '{seen[name]}' and '{entry}' "
                            f"share the name '{name}'; chapter file names must be unique")
        seen[name] = entry
        out.append(Chapter(name=name, entry=entry, source=src))
    return out


def select(all_chapters: list[Chapter], names: list[str] | None) -> list[Chapter]:
    """The chapters called ``names`` (stems, toc entries or file paths), in toc order."""
    if not names:
        return list(all_chapters)
    by_name = {c.name: c for c in all_chapters}
    wanted = set()
    for n in names:
        stem = Path(_strip_suffix(n)).name
        if stem not in by_name:
            raise BookError(f"unknown chapter '{n}'; the toc lists {list(by_name)}")
        wanted.add(stem)
    return [c for c in all_chapters if c.name in wanted]


def prune(toc: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """A copy of ``toc`` without the pages (and their sub-pages) whose entry is not in ``keep``.

    The root page is always kept; parts left without chapters are dropped.
    """

    def walk(items: list[Any]) -> list[Any]:
        kept = []
        for item in items:
            item = copy.deepcopy(item)
            if "file" in item and _strip_suffix(str(item["file"])) not in keep:
                continue
            for key in ("parts", "chapters", "sections"):
                if key in item:
                    item[key] = walk(item[key])
                    if not item[key]:
                        del item[key]
            if "file" not in item and not any(k in item for k in ("chapters", "sections", "url")):
                continue  # an emptied part
            kept.append(item)
        return kept

    out = copy.deepcopy(toc)
    for key in ("parts", "chapters"):
        if key in out:
            out[key] = walk(out[key])
            if not out[key]:
                del out[key]
    return out
