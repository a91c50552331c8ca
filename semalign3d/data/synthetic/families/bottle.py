"""Bottles: a slightly tapered body, a conical shoulder, a neck and a mouth ring, with a label
on the front half (so a bottle has a front and a back)."""

from __future__ import annotations

import numpy as np
import torch

from semalign3d.data.synthetic.family import (
    UP_FRAME,
    Family,
    KeypointDef,
    frustum,
    hsv,
    lr,
    side_keypoints,
)
from semalign3d.data.synthetic.primitives import Primitive

RANGES = {
    "height": (0.2, 0.36),  # total height, m
    "body_r": (0.11, 0.17),  # body radius / height
    "body_frac": (0.45, 0.65),  # body height / height
    "shoulder_frac": (0.08, 0.2),  # shoulder height / height
    "neck_r": (0.28, 0.45),  # neck radius / body radius
    "taper": (0.9, 1.05),  # body top radius / bottom radius
    "lip_frac": (0.03, 0.05),  # mouth ring height / height
    "lip_r": (1.08, 1.25),  # mouth ring radius / neck radius
}
KEYPOINTS = lr("mouth", "neck base", "shoulder", "body middle", "base")
PARTS = ("body", "shoulder", "neck", "mouth")


def build(p: dict[str, float]) -> tuple[list[Primitive], list[KeypointDef]]:
    h = p["height"]
    r = p["body_r"] * h
    body_h, sh_h, lip_h = p["body_frac"] * h, p["shoulder_frac"] * h, p["lip_frac"] * h
    neck_h = h - body_h - sh_h - lip_h
    rt, rn = r * p["taper"], r * p["neck_r"]
    prims = [
        frustum((0, 0, 0), UP_FRAME, r, rt, body_h, 0),
        frustum((0, body_h, 0), UP_FRAME, rt, rn, sh_h, 1),
        frustum((0, body_h + sh_h, 0), UP_FRAME, rn, rn, neck_h, 2),
        frustum((0, h - lip_h, 0), UP_FRAME, rn * p["lip_r"], rn * p["lip_r"], lip_h, 3),
    ]
    kps = []
    for prim, w in ((3, 1.0), (2, 0.0), (1, 0.0), (0, 0.5), (0, 0.0)):
        kps += side_keypoints(prim, (1, 0, w))
    return prims, kps


def palette(rng: np.random.Generator) -> np.ndarray:
    hue = rng.choice([0.08, 0.3, 0.35, 0.55]) + rng.uniform(-0.03, 0.03)
    glass = hsv(hue, rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.75))
    cap = hsv(rng.uniform(0, 1), rng.uniform(0.4, 1.0), rng.uniform(0.4, 0.95))
    label = hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.7), rng.uniform(0.7, 1.0))
    return np.stack([glass, glass, glass, cap, label])


def decal(part: int, ell: torch.Tensor) -> torch.Tensor:
    """The label: front half of the body, mid height."""
    if part != 0:
        return torch.zeros(len(ell), dtype=torch.bool)
    return (ell[:, 1] > -0.15) & (ell[:, 2] > 0.3) & (ell[:, 2] < 0.8)


FAMILY = Family("bottle", RANGES, KEYPOINTS, PARTS, build, palette, decal)
