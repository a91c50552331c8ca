"""Executing chapters with papermill: one in-process call per chapter, atomic outputs.

An executed copy is written only when its chapter ran cleanly; a failing run is kept beside it
as ``<name>.failed.ipynb`` with the traceback, and the error names chapter, cell and exception.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from semalign3d.book.params import read_notebook
from semalign3d.book.toc import BookError, Chapter

#: a Python warning printed to stderr (``file.py:12: UserWarning: ...``); the book is warning-free
WARNING_RE = re.compile(r"\b\w*Warning: ")


@dataclass(frozen=True)
class Execution:
    """Result of :func:`execute`: ``seconds`` is 0 when the copy was up to date."""

    chapter: str
    output: Path
    seconds: float
    skipped: bool


def output_name(chapter: str, overrides: dict[str, Any] | None = None) -> str:
    """``"02_data__category=chair.ipynb"`` for ``overrides={"category": "chair"}``."""
    parts = [chapter]
    for k in sorted(overrides or {}):
        value = json.dumps(overrides[k]) if not isinstance(overrides[k], str) else overrides[k]
        parts.append(f"{k}={re.sub(r'[^A-Za-z0-9._=+-]', '_', value)}")
    return "__".join(parts) + ".ipynb"


def _normal(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def is_fresh(output: Path, sources: Path | Sequence[Path], parameters: dict[str, Any]) -> bool:
    """The executed copy is newer than every one of its sources (the chapter and what its
    outputs depend on: the package, the measured results) and was run with the same
    parameters."""
    sources = [sources] if isinstance(sources, Path) else list(sources)
    newest = max((f.stat().st_mtime for f in sources if f.is_file()), default=0.0)
    if not output.is_file() or output.stat().st_mtime <= newest:
        return False
    try:
        meta = nbformat.read(output, as_version=4).metadata.get("papermill", {})
    except Exception:  # an unreadable copy is simply stale
        return False
    return _normal(dict(meta.get("parameters", {}))) == _normal(parameters)


def stderr_warnings(nb) -> list[str]:
    """``"cell N: <first warning line>"`` for every code cell that printed a Python warning."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                m = next((ln for ln in out.get("text", "").splitlines() if WARNING_RE.search(ln)),
                         None)
                if m:
                    found.append(f"cell {i}: {m.strip()}")
                    break
    return found


def dependencies(chapter: Chapter) -> list[Path]:
    """Files besides its source that a chapter's outputs depend on: the ``semalign3d`` package
    and the committed measurements in ``book/measured/`` (a chapter is in ``book/chapters/``)."""
    import semalign3d

    package = sorted(Path(semalign3d.__file__).parent.rglob("*.py"))
    measured = sorted(chapter.source.parent.parent.joinpath("measured").glob("*"))
    return package + measured


def execute(
    chapter: Chapter,
    parameters: dict[str, Any],
    output: Path,
    cwd: Path,
    *,
    force: bool = True,
    progress: bool = True,
    start_timeout: int = 120,
) -> Execution:
    """Run ``chapter`` with ``parameters`` from ``cwd`` and write the executed copy ``output``.

    With ``force=False`` an up-to-date copy (:func:`is_fresh`) is kept and nothing runs.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = Path(output)
    if not force and is_fresh(output, [chapter.source, *dependencies(chapter)], parameters):
        return Execution(chapter.name, output, 0.0, True)
    output.parent.mkdir(parents=True, exist_ok=True)
    source_nb = output.with_name(f".{output.stem}.source.ipynb")
    running = output.with_name(f".{output.stem}.running.ipynb")
    failed = output.with_name(f"{output.stem}.failed.ipynb")
    nbformat.write(read_notebook(chapter.source), source_nb)
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source_nb), str(running), parameters=parameters, cwd=str(cwd),
            progress_bar=progress, start_timeout=start_timeout,
        )
    except PapermillExecutionError as e:
        os.replace(running, failed)
        raise BookError(
            f"chapter '{chapter.name}' ({chapter.source}) failed in cell [{e.exec_count}]: "
            f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {failed}"
        ) from e
    except Exception as e:  # kernel died, timed out, could not start
        if running.exists():
            os.replace(running, failed)
        raise BookError(f"chapter '{chapter.name}' ({chapter.source}) could not be executed: "
                        f"{type(e).__name__}: {e}") from e
    finally:
        source_nb.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    nb = nbformat.read(running, as_version=4)
    nb.metadata.papermill["input_path"] = str(chapter.source)
    nb.metadata.papermill["output_path"] = str(output)
    nbformat.write(nb, running)
    warnings = stderr_warnings(nb)
    if warnings:
        os.replace(running, failed)
        raise BookError(f"chapter '{chapter.name}' ({chapter.source}) printed warnings (the "
                        f"book is built with warnings as errors):\n  " + "\n  ".join(warnings)
                        + f"\n  executed copy: {failed}")
    os.replace(running, output)
    failed.unlink(missing_ok=True)
    return Execution(chapter.name, output, seconds, False)
