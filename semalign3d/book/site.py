"""The HTML book: stage the sources with the executed chapters, run Jupyter Book, check offline.

The staging folder is a copy of ``book/`` in which each chapter's MyST source is replaced by
its papermill-executed ``.ipynb`` and Jupyter Book executes nothing (``execute_notebooks:
"off"``): what the site shows is exactly what papermill produced.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from semalign3d.book import offline, toc
from semalign3d.book.toc import BookError, Chapter

#: not part of the site's sources
NOT_SOURCES = (
    "_build", "_executed", "node_modules", "tools", "params.yaml", "package.json",
    "package-lock.json", ".*",
)
VENDOR_DIR = "_static_vendor"


def page_dirs(book_dir: Path) -> list[str]:
    """Folders (relative to the book, ``""`` = root) that hold toc pages."""
    parents = {Path(e).parent.as_posix() for e in toc.toc_entries(toc.read_toc(book_dir))}
    return sorted("" if p == "." else p for p in parents)


def stage(
    book_dir: Path,
    staging: Path,
    chapters: list[Chapter],
    executed: dict[str, Path],
    vendor_dir: Path,
) -> Path:
    """Copy the book to ``staging`` with ``executed`` (chapter name -> ipynb) in place of the
    chapter sources. Chapters without an executed copy are left out of the staged toc."""
    book_dir, staging = Path(book_dir), Path(staging)
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(book_dir, staging, ignore=shutil.ignore_patterns(*NOT_SOURCES, VENDOR_DIR))
    keep = set(toc.toc_entries(toc.read_toc(book_dir)))
    for ch in chapters:
        (staging / ch.source.relative_to(book_dir)).unlink()
        if ch.name in executed:
            shutil.copy2(executed[ch.name], staging / f"{ch.entry}.ipynb")
        else:
            keep.discard(ch.entry)
    (staging / "_toc.yml").write_text(
        yaml.safe_dump(toc.prune(toc.read_toc(book_dir), keep), sort_keys=False)
    )
    config = yaml.safe_load((book_dir / "_config.yml").read_text()) or {}
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (staging / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(vendor_dir, staging / VENDOR_DIR)
    return staging


def site_dir(book_dir: Path, profile: str) -> Path:
    """Where a profile's HTML goes: ``book/_build/html`` for ``default`` (what ``make book``
    opens), ``book/_build/html-<profile>`` otherwise."""
    return Path(book_dir) / "_build" / ("html" if profile == "default" else f"html-{profile}")


def build_html(staging: Path, work_dir: Path, out: Path) -> Path:
    """``jupyter-book build`` of ``staging`` with warnings as errors; the site ends up in ``out``
    (Jupyter Book's own outputs stay in ``work_dir``).

    Fails with BookError carrying Sphinx's warnings, or listing any page resource that would
    be loaded from the network (then ``out`` is left unchanged).
    """
    work_dir, out = Path(work_dir), Path(out)
    html = work_dir / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)  # pages of removed chapters must not linger
    # jupyter_book.cli has no __main__; call its click group in the running interpreter
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; main()",
           "build", str(staging), "--path-output", str(work_dir), "-W", "-n", "--keep-going",
           "--all", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (html / "index.html").is_file():
        tail = (proc.stdout + proc.stderr).strip()[-4000:]
        raise BookError(f"jupyter-book build {staging} failed (exit {proc.returncode}):\n{tail}")
    external = offline.external_resources(html)
    if external:
        lines = [f"{r.file.relative_to(html)}: {r.kind} {r.url}" for r in external[:20]]
        raise BookError(f"the book built in {html} loads {len(external)} resources from the "
                        "network (it must work offline):\n  " + "\n  ".join(lines))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(html, out)
    return out
