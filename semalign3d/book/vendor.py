"""Offline JavaScript for the static book, copied from ``book/node_modules`` (npm, pinned).

Two folders come out, matching ``book/_config.yml``:

* ``static/`` (``html_static_path``, served under ``_static/``): ``require.js``,
  ``embed-amd.js`` (the widget manager) and MathJax 3 ``es5`` trimmed to what
  ``tex-mml-chtml.js`` loads (TeX extensions, CHTML woff-v2 fonts, menu, accessibility);
* ``extra/`` (``html_extra_path``, copied to the site root): for every folder holding pages,
  ``widgets/anywidget@~0.11.*/dist/index.js`` and the widget manager's fonts. The widget
  manager resolves both relative to the *page* (its ``data-jupyter-widgets-cdn`` is
  ``widgets/`` and its public path is the page's folder), so each page folder gets a copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from semalign3d.book.toc import BookError

#: npm package -> files and folders (relative to the package) that go into ``static/``
STATIC = {
    "requirejs": ["require.js"],
    "@jupyter-widgets/html-manager": ["dist/embed-amd.js"],
}
#: MathJax parts kept under ``static/mathjax/es5`` (the rest of its 24 MB is other bundles)
MATHJAX_KEEP = [
    "tex-mml-chtml.js",
    "input/tex/extensions",
    "input/mml/extensions",
    "output/chtml/fonts/woff-v2",
    "ui",
    "a11y",
    "sre",
]
STAMP = ".vendored.json"


def npm_ci(book_dir: Path, log: Callable[[str], None] = print) -> Path:
    """``book/node_modules``, installed with ``npm ci`` from the lock file when missing or older
    than ``package-lock.json``."""
    modules = book_dir / "node_modules"
    lock = book_dir / "package-lock.json"
    if not lock.is_file():
        raise BookError(f"{lock}: missing; run `npm install` in {book_dir} once to create it")
    installed = modules / ".package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise BookError("npm is not on PATH: it is needed once to fetch the book's JavaScript "
                        f"(see {book_dir / 'package.json'})")
    log(f"vendor: npm ci in {book_dir}")
    # --ignore-scripts: the vendored packages are plain files; no install hook needs to run
    proc = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                          cwd=book_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BookError(f"`npm ci` in {book_dir} failed (exit {proc.returncode}):\n"
                        f"{proc.stderr[-2000:]}")
    return modules


def _package_version(modules: Path, package: str) -> str:
    path = modules / package / "package.json"
    try:
        return json.loads(path.read_text())["version"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        raise BookError(f"{path}: cannot read the version of npm package '{package}'") from e


def anywidget_dir(npm_version: str) -> str:
    """``widgets/anywidget@~0.11.*/dist``: where the widget manager looks for the front-end of
    the installed Python anywidget (its ``_model_module_version``), checked against npm's."""
    import anywidget

    wanted = anywidget.AnyWidget._model_module_version.default_value  # e.g. "~0.11.*"
    major_minor = ".".join(npm_version.split(".")[:2])
    if wanted != f"~{major_minor}.*":
        raise BookError(f"book/package.json pins anywidget {npm_version} but the Python package "
                        f"asks for {wanted}; pin the matching npm version")
    return f"widgets/anywidget@{wanted}/dist"


def _copy(src: Path, dst: Path) -> None:
    if not src.exists():
        raise BookError(f"{src}: expected in the npm package; is book/node_modules complete?")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def vendor(
    book_dir: Path, dest: Path, page_dirs: Iterable[str], log: Callable[[str], None] = print
) -> Path:
    """Fill ``dest/static`` and ``dest/extra`` (see the module doc) and return ``dest``.

    ``page_dirs`` are the folders (relative to the book, ``""`` for the root) holding pages.
    Skips the copy when ``dest`` already holds this lock file's files for these folders.
    """
    book_dir, dest = Path(book_dir), Path(dest)
    dirs = sorted(set(page_dirs) | {""})
    lock = book_dir / "package-lock.json"
    key = {
        "lock": hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None,
        "page_dirs": dirs,
    }
    stamp = dest / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == key:
        return dest
    modules = npm_ci(book_dir, log)
    if dest.exists():
        shutil.rmtree(dest)
    static, extra = dest / "static", dest / "extra"
    for package, files in STATIC.items():
        for f in files:
            _copy(modules / package / f, static / Path(f).name)
    for part in MATHJAX_KEEP:
        _copy(modules / "mathjax" / "es5" / part, static / "mathjax" / "es5" / part)
    anywidget = anywidget_dir(_package_version(modules, "anywidget"))
    manager = modules / "@jupyter-widgets" / "html-manager" / "dist"
    fonts = sorted(p for p in manager.iterdir() if p.suffix in (".woff", ".woff2"))
    for d in dirs:
        root = extra / d
        _copy(modules / "anywidget" / "dist" / "index.js", root / anywidget / "index.js")
        for font in fonts:
            _copy(font, root / "@jupyter-widgets" / "html-manager" / "dist" / font.name)
    stamp.write_text(json.dumps(key))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    log(f"vendor: {size / 1e6:.1f} MB of JavaScript and fonts in {dest}")
    return dest
