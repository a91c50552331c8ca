"""Data a profile's chapters read, made before they run (``prepare`` in ``params.yaml``)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from semalign3d.book.params import PrepareStep
from semalign3d.book.toc import BookError


def argv(step: PrepareStep) -> list[str]:
    """The step's command; ``python`` is the running interpreter (the venv's, not PATH's)."""
    head, *rest = step.run
    return [sys.executable, *rest] if head in ("python", "python3") else [head, *rest]


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def run_steps(
    steps: tuple[PrepareStep, ...], root: Path, log: Callable[[str], None] = print
) -> None:
    """Run every step whose ``creates`` path is missing, from ``root``.

    A step whose ``requires`` module is not importable is skipped with a note: the chapters
    reading its data must then say so themselves. A failing command raises BookError.
    """
    for step in steps:
        target = root / step.creates
        cmd = shlex.join(step.run)
        if target.exists():
            log(f"prepare: {step.creates} exists")
            continue
        if step.requires and not _available(step.requires):
            log(f"prepare: skipped `{cmd}`: {step.requires} is not available; chapters that "
                f"read {step.creates} will show a note instead")
            continue
        log(f"prepare: {cmd}")
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(argv(step), cwd=root).returncode
        except OSError as e:
            raise BookError(f"prepare step `{cmd}` could not start: {e}") from e
        if rc != 0:
            raise BookError(f"prepare step `{cmd}` failed with exit code {rc}")
        if not target.exists():
            raise BookError(f"prepare step `{cmd}` succeeded but did not create {target}")
        log(f"prepare: {step.creates} made in {time.perf_counter() - t0:.1f} s")
