"""TV monitors: a front panel with a protruding screen, a tapered back box, a neck and a base.

Keypoints follow SPair's ring order, clockwise in the frontal view: top-left, top-middle,
top-right, right-middle, bottom-right, bottom-middle, bottom-left, left-middle; ids 0-7 on the
outer frame, 8-15 on the screen. "Left" is the viewer's left facing the screen (-x).
"""

from __future__ import annotations

import numpy as np
import torch

from semalign3d.data.synthetic.family import Family, KeypointDef, box, hsv, upbox
from semalign3d.data.synthetic.primitives import Primitive

RANGES = {
    "width": (0.4, 0.7),  # panel width, m
    "aspect": (0.5, 0.78),  # panel height / width
    "panel_d": (0.025, 0.06),  # panel depth
    "border": (0.015, 0.045),  # frame border around the screen
    "chin": (1.0, 2.0),  # bottom border / border
    "back_frac": (0.55, 0.85),  # back box size / panel size
    "back_d": (0.03, 0.2),  # back box depth (flat panel .. CRT-like)
    "back_taper": (0.6, 0.95),  # back box rear size / front size
    "neck_h": (0.04, 0.14),  # gap between base and panel
    "neck_w": (0.04, 0.1),  # neck width
    "base_w": (0.18, 0.32),  # base width
    "base_d": (0.12, 0.22),  # base depth
    "base_t": (0.012, 0.025),  # base thickness
}
RING = ((-1, 1), (0, 1), (1, 1), (1, 0.5), (1, 0), (0, 0), (-1, 0), (-1, 0.5))  # (u, w)
RING_NAMES = (
    "top left",
    "top middle",
    "top right",
    "right middle",
    "bottom right",
    "bottom middle",
    "bottom left",
    "left middle",
)
KEYPOINTS = tuple(f"{where} {pos}" for where in ("frame", "screen") for pos in RING_NAMES)
PARTS = ("frame", "screen", "back", "neck", "base")
BACKWARDS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]).T  # w runs to -z


def build(p: dict[str, float]) -> tuple[list[Primitive], list[KeypointDef]]:
    w, pd, bd = p["width"], p["panel_d"], p["border"]
    ht = w * p["aspect"]
    y0 = p["base_t"] + p["neck_h"]
    chin = p["chin"] * bd
    ss = 0.002  # the screen protrudes 2 mm from the frame
    zn = -pd / 2 - min(p["back_d"], 0.05) / 2
    bw, bh = w / 2 * p["back_frac"], ht / 2 * p["back_frac"]
    t = p["back_taper"]
    neck_h = p["neck_h"] + 0.3 * ht  # reaches up behind the panel
    prims = [
        upbox((0, y0 + ht / 2, 0), (w / 2, ht / 2, pd / 2), 0),
        upbox(
            (0, y0 + (chin + ht - bd) / 2, pd / 2 + ss / 2),
            (w / 2 - bd, (ht - bd - chin) / 2, ss / 2),
            1,
        ),
        box((0, y0 + ht / 2, -pd / 2), BACKWARDS, (bw, bh, bw * t, bh * t, 0, 0, p["back_d"]), 2),
        upbox((0, p["base_t"] + neck_h / 2, zn), (p["neck_w"] / 2, neck_h / 2, 0.012), 3),
        upbox((0, p["base_t"] / 2, zn), (p["base_w"] / 2, p["base_t"] / 2, p["base_d"] / 2), 4),
    ]
    # a hair inside the front face: edge points are ambiguous from behind, face points are not
    e = 0.995
    kps = [KeypointDef(prim, (u * e, 1, 0.5 + (v - 0.5) * e)) for prim in (0, 1) for u, v in RING]
    return prims, kps


def palette(rng: np.random.Generator) -> np.ndarray:
    shell = np.full(3, rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.6, 0.9)]))
    shell = shell * (1 + rng.uniform(-0.05, 0.05, 3))
    screen = hsv(rng.uniform(0.5, 0.7), rng.uniform(0.2, 0.6), rng.uniform(0.08, 0.3))
    glare = hsv(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.35, 0.6))
    return np.stack([shell, screen, shell * 0.9, shell, shell * 0.95, glare])


def decal(part: int, ell: torch.Tensor) -> torch.Tensor:
    """A diagonal glare band on the screen."""
    if part != 1:
        return torch.zeros(len(ell), dtype=torch.bool)
    s = ell[:, 0] + 1.6 * ell[:, 2]
    return (s > 0.9) & (s < 1.3)


FAMILY = Family("tvmonitor", RANGES, KEYPOINTS, PARTS, build, palette, decal)
