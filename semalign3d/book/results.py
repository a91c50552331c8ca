"""Our PCK results as written by ``semalign3d eval-pairs`` (``runs/results/*.json``).

Each file is one run::

    {"per_image": {"all": 88.1, "<category>": ...}, "per_keypoint": {...},
     "n_pairs": 12234, "n_skipped": 0}

PCK values may be fractions (0..1) or percentages; a file whose values are all <= 1 is read as
fractions and converted, so the book always shows percent like the paper's Table 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunResult:
    """One results file: PCK in percent per category (and ``"all"``)."""

    name: str
    path: Path
    per_image: dict[str, float]
    per_keypoint: dict[str, float]
    n_pairs: int
    n_skipped: int


def _scores(data: dict, key: str, path: Path) -> dict[str, float]:
    value = data.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
    ):
        raise ValueError(f"{path}: '{key}' must map category names to numbers")
    return {str(k): float(v) for k, v in value.items()}


def read_result(path: str | Path) -> RunResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read results JSON: {e}") from e
    if not isinstance(data, dict) or "per_image" not in data:
        raise ValueError(f"{path}: not an eval-pairs summary (no 'per_image')")
    per_image, per_kp = _scores(data, "per_image", path), _scores(data, "per_keypoint", path)
    values = [*per_image.values(), *per_kp.values()]
    scale = 100.0 if values and max(values) <= 1.0 else 1.0
    return RunResult(
        name=path.stem,
        path=path,
        per_image={k: v * scale for k, v in per_image.items()},
        per_keypoint={k: v * scale for k, v in per_kp.items()},
        n_pairs=int(data.get("n_pairs", 0)),
        n_skipped=int(data.get("n_skipped", 0)),
    )


def read_results(results_dir: str | Path) -> list[RunResult]:
    """Every ``*.json`` in ``results_dir`` (sorted by name); ``[]`` if the folder is missing."""
    d = Path(results_dir)
    if not d.is_dir():
        return []
    return [read_result(p) for p in sorted(d.glob("*.json"))]
