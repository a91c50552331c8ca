"""Papermill parameters per chapter and profile (``book/params.yaml``), checked strictly.

Layout of ``params.yaml``::

    default:                       # every parameter of every chapter, with its value
      prepare:                     # data the chapters need (see semalign3d.book.prepare)
        - {creates: data/synthetic, requires: semalign3d.commands.data,
           run: [python, -m, semalign3d, data, synth, --out, data/synthetic]}
      chapters:
        02_data: {category: cow, n_images: 12}
    tiny:                          # overrides on top of `default`; `prepare` replaces default's
      prepare: []
      chapters:
        02_data: {n_images: 4}

A chapter's parameters are the assignments of its cell tagged ``parameters``. The ``default``
profile must list exactly those names; other profiles may only override existing names, so a
typo anywhere fails loudly instead of silently running with the notebook's own default.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from semalign3d.book.toc import BookError, Chapter

DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Parameter:
    """One assignment of a ``parameters`` cell: ``name = default  # help``."""

    name: str
    default: Any
    help: str = ""


@dataclass(frozen=True)
class PrepareStep:
    """A command that creates data the chapters read; run from the repository root.

    Attributes:
        creates: path (relative to the repository root) whose existence means "done".
        run: argv; a leading ``python`` means the running interpreter.
        requires: module that must be importable for the step to run; while it is missing
            (the command is not written yet) the step is skipped with a note.
    """

    creates: str
    run: tuple[str, ...]
    requires: str | None = None


@dataclass(frozen=True)
class Profile:
    """A resolved profile: ``default`` with the profile's overrides applied."""

    name: str
    prepare: tuple[PrepareStep, ...] = ()
    chapters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def parameters(self, chapter: str) -> dict[str, Any]:
        return dict(self.chapters.get(chapter, {}))


# ------------------------------------------------------------------------------ parameters cell


def read_notebook(path: Path):
    """The notebook ``path`` (MyST markdown via jupytext, or ipynb) as an nbformat node."""
    import jupytext

    try:
        return jupytext.read(path)
    except FileNotFoundError as e:
        raise BookError(f"{path}: chapter source not found") from e
    except Exception as e:  # jupytext raises several parser-specific types
        raise BookError(f"{path}: cannot read the notebook: {e}") from e


def parameter_cell(nb, where: str) -> str:
    """Source of the single code cell tagged ``parameters``."""
    cells = [
        c for c in nb.cells
        if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise BookError(f"{where}: expected exactly one code cell tagged 'parameters', "
                        f"found {len(cells)}")
    return cells[0].source


def parse_parameters(source: str, where: str) -> dict[str, Parameter]:
    """The ``name = literal  # help`` assignments of a parameters cell, in order.

    Only literal values are allowed: papermill replaces them by injecting a new cell, so a
    computed default would silently differ from what the book documents.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise BookError(f"{where}: parameters cell is not valid Python: {e}") from e
    lines = source.splitlines()
    out: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            raise BookError(f"{where}: line {node.lineno} of the parameters cell is not a "
                            "single 'name = value' assignment")
        if not isinstance(target, ast.Name):
            raise BookError(f"{where}: line {node.lineno}: parameters must be plain names")
        try:
            default = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError) as e:
            raise BookError(f"{where}: parameter '{target.id}' must have a literal default "
                            f"(a number, string, bool, None, list or dict)") from e
        rest = lines[node.end_lineno - 1][value.end_col_offset :] if node.end_lineno else ""
        help_ = rest.split("#", 1)[1].strip() if "#" in rest else ""
        out[target.id] = Parameter(target.id, default, help_)
    return out


def chapter_parameters(chapter: Chapter) -> dict[str, Parameter]:
    nb = read_notebook(chapter.source)
    return parse_parameters(parameter_cell(nb, str(chapter.source)), str(chapter.source))


# ------------------------------------------------------------------------------ params.yaml


def read_params(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise BookError(f"{path}: parameters file not found") from e
    except yaml.YAMLError as e:
        raise BookError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(raw, dict) or DEFAULT_PROFILE not in raw:
        raise BookError(f"{path}: expected a mapping of profiles including '{DEFAULT_PROFILE}'")
    for name, prof in raw.items():
        if not isinstance(prof, dict):
            raise BookError(f"{path}: profile '{name}' must be a mapping")
        extra = set(prof) - {"prepare", "chapters"}
        if extra:
            raise BookError(f"{path}: profile '{name}' has unknown keys {sorted(extra)}; "
                            "expected 'prepare' and 'chapters'")
        chapters = prof.get("chapters") or {}
        if not isinstance(chapters, dict) or not all(
            isinstance(v, dict) or v is None for v in chapters.values()
        ):
            raise BookError(f"{path}: profile '{name}': 'chapters' must map chapter names to "
                            "mappings of parameters")
    return raw


def _prepare_steps(items: Any, where: str) -> tuple[PrepareStep, ...]:
    if not isinstance(items, list):
        raise BookError(f"{where}: 'prepare' must be a list of steps")
    steps = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"creates", "run", "requires"} or not {
            "creates", "run"
        } <= set(item):
            raise BookError(f"{where}: prepare[{i}] must have 'creates', 'run' and optionally "
                            f"'requires', got {item!r}")
        run = item["run"]
        if not isinstance(run, list) or not run or not all(isinstance(a, str) for a in run):
            raise BookError(f"{where}: prepare[{i}].run must be a non-empty list of strings")
        steps.append(PrepareStep(str(item["creates"]), tuple(run), item.get("requires")))
    return tuple(steps)


def profile(raw: dict[str, Any], name: str, where: str = "params.yaml") -> Profile:
    """Profile ``name`` resolved on top of ``default``."""
    if name not in raw:
        raise BookError(f"{where}: unknown profile '{name}'; available: {sorted(raw)}")
    base, over = raw[DEFAULT_PROFILE], raw[name]
    chapters = {k: dict(v or {}) for k, v in (base.get("chapters") or {}).items()}
    if name != DEFAULT_PROFILE:
        for ch, values in (over.get("chapters") or {}).items():
            chapters.setdefault(ch, {}).update(values or {})
    prepare = over.get("prepare", base.get("prepare", []))
    return Profile(name, _prepare_steps(prepare or [], f"{where}: profile '{name}'"), chapters)


def _unknown(names: set[str], valid: list[str], what: str) -> list[str]:
    msgs = []
    for n in sorted(names):
        close = difflib.get_close_matches(n, valid, n=1)
        msgs.append(f"unknown {what} '{n}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return msgs


def validate(
    raw: dict[str, Any], specs: dict[str, dict[str, Parameter]], where: str = "params.yaml"
) -> None:
    """Check ``params.yaml`` against the chapters' parameter cells (``specs``: chapter ->
    parameters); raises one BookError listing every problem."""
    problems: list[str] = []
    names = list(specs)
    for prof_name, prof in raw.items():
        chapters = prof.get("chapters") or {}
        problems += [f"profile '{prof_name}': {m}"
                     for m in _unknown(set(chapters) - set(specs), names, "chapter")]
        for ch, values in chapters.items():
            if ch not in specs:
                continue
            valid = list(specs[ch])
            problems += [f"profile '{prof_name}', chapter '{ch}': {m}"
                         for m in _unknown(set(values or {}) - set(valid), valid, "parameter")]
            problems += [f"profile '{prof_name}', chapter '{ch}': {m}"
                         for m in _type_problems(specs[ch], values or {})]
        if prof_name == DEFAULT_PROFILE:
            for ch, spec in specs.items():
                missing = [p for p in spec if p not in (chapters.get(ch) or {})]
                if missing:
                    problems.append(f"profile 'default', chapter '{ch}': missing parameters "
                                    f"{missing} (default lists every parameter of every chapter)")
        try:
            profile(raw, prof_name, where)
        except BookError as e:
            problems.append(str(e))
    if problems:
        raise BookError(f"{where} does not match the chapters:\n  " + "\n  ".join(problems))


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: YAML scalars (``3``, ``0.5``, ``true``, ``null``, ``chair``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _type_problems(spec: dict[str, Parameter], values: dict[str, Any]) -> list[str]:
    """Values whose type differs from the notebook default's (None on either side is free)."""
    out = []
    for k, v in values.items():
        d = spec[k].default if k in spec else None
        if d is None or v is None:
            continue
        ok = isinstance(v, type(d)) or (isinstance(d, float) and isinstance(v, int))
        if not ok or (isinstance(v, bool) and not isinstance(d, bool)):
            out.append(f"parameter '{k}' expects a {type(d).__name__} like {d!r}, got {v!r}")
    return out


def check_overrides(chapter: str, spec: dict[str, Parameter], overrides: dict[str, Any]) -> None:
    """Overrides must name existing parameters, with a value of the default's type."""
    bad = _unknown(set(overrides) - set(spec), list(spec), "parameter")
    bad += _type_problems(spec, overrides)
    if bad:
        raise BookError(f"chapter '{chapter}': " + "; ".join(bad))
