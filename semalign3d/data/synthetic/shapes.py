"""The registry of parametric, mirror-symmetric shape families with SPair-71k keypoints.

Keypoint ``k`` and its SPair flip partner are mirror images (``x -> -x``) and SPair's 'self' ids
lie on the mirror plane ``x = 0`` (checked by :func:`check_family`). Every instance draws its
parameters uniformly from ranges of +-20-30 %, so one rigid template cannot fit every instance.
See ``family`` for the canonical frame and ``families/`` for the four shapes.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from semalign3d.data import flips
from semalign3d.data.records import DataError
from semalign3d.data.synthetic.families import aeroplane, bottle, chair, tvmonitor
from semalign3d.data.synthetic.family import Family, Instance, KeypointDef
from semalign3d.data.synthetic.primitives import MIRROR

__all__ = [
    "FAMILIES",
    "Family",
    "Instance",
    "KeypointDef",
    "categories",
    "check_family",
    "class_frame",
    "family",
    "mean_keypoints",
]

FAMILIES: dict[str, Family] = {
    m.FAMILY.category: m.FAMILY for m in (aeroplane, bottle, chair, tvmonitor)
}


def family(category: str) -> Family:
    """The shape family of ``category``; DataError for categories without one."""
    if category not in FAMILIES:
        raise DataError(
            f"no synthetic shape family for category '{category}'; available: {sorted(FAMILIES)}"
        )
    return FAMILIES[category]


def categories() -> list[str]:
    return sorted(FAMILIES)


@cache
def class_frame(category: str) -> tuple[np.ndarray, float]:
    """``(centre [3], half_extent)`` of the family template, used to normalise canonical
    coordinates to about ``[-1, 1]`` (the centre's x is exactly 0: the mirror plane)."""
    pts = family(category).template().bound_points()
    lo, hi = pts.min(0), pts.max(0)
    c = 0.5 * (lo + hi)
    c[0] = 0.0
    return c, float((hi - lo).max() / 2)


def mean_keypoints(category: str, n: int = 1024, seed: int = 0) -> np.ndarray:
    """``[K x 3]`` expected canonical keypoints over the family (Monte Carlo, ``n`` draws)."""
    fam = family(category)
    rng = np.random.default_rng(seed)
    acc = np.zeros((flips.num_keypoints(category), 3))
    for _ in range(n):
        acc += fam.sample(rng).keypoints().numpy()
    return acc / n


def check_family(category: str) -> None:
    """Raise DataError if keypoint count or mirror partners disagree with the SPair flip table."""
    fam = family(category)
    k = flips.num_keypoints(category)
    inst = fam.template()
    if len(inst.keypoint_defs) != k or len(fam.keypoint_names) != k:
        raise DataError(
            f"{category}: family defines {len(inst.keypoint_defs)} keypoints, SPair has {k}"
        )
    kp = inst.keypoints().numpy()
    perm = flips.flip_permutation(category).numpy()
    err = np.abs((kp @ MIRROR)[perm] - kp).max()
    if err > 1e-9:
        raise DataError(f"{category}: keypoints are not mirror images of their partners ({err})")
