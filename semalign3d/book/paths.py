"""Path resolution inside chapters: the same relative parameter works from any working directory.

papermill runs chapters from the repository root, Jupyter opens them from ``book/chapters``;
both resolve ``"../shared/data/spair-mini"`` against the checkout's root.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_repo_root(path: Path) -> bool:
    """A semalign3d checkout: has the package and the book."""
    return (path / "semalign3d" / "__init__.py").is_file() and (path / "book").is_dir()


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest ancestor of ``start`` (default: the working directory) that is a checkout.

    Falls back to the checkout holding this (editable) package, then to ``start`` itself, so a
    chapter run from anywhere still finds ``data/`` and ``runs/`` of the checkout it imports.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if is_repo_root(candidate):
            return candidate
    package_checkout = Path(__file__).resolve().parents[2]
    if is_repo_root(package_checkout):
        return package_checkout
    return here


def resolve(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` if absolute, else ``root / path`` (``root`` defaults to :func:`repo_root`),
    with ``..`` folded (``/repo/../shared`` -> ``/shared``) so printed paths read well."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (Path(root) if root is not None else repo_root()) / p
    return Path(os.path.normpath(p))
