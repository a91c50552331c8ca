"""Building blocks of the parametric shape families.

Canonical frame (metric units, metres): ``x`` lateral with the mirror plane at ``x = 0``, ``y`` up,
``z`` towards the object's front; ``+x`` is the object's left. A keypoint is a point on one
primitive at fixed normalised local coordinates, so the same id is the same semantic surface point
on every instance and on the family *template* (the instance at the mid-range parameters).
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from semalign3d.data.synthetic.primitives import Primitive

#: local frame whose (q1, q2, q3) are canonical (x, z, y): "w" runs up, "v" to the front
UP_FRAME = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
#: local frame equal to the canonical axes
ID_FRAME = np.eye(3)


@dataclass(frozen=True)
class KeypointDef:
    """Keypoint = point ``ell`` on primitive ``prim``; ``tol`` (metres) widens the visibility test
    for points on the rim of thin parts, which annotators see from both sides."""

    prim: int
    ell: tuple[float, float, float]
    tol: float = 0.0


@dataclass(frozen=True, eq=False)
class Instance:
    """One shape: its parameters, primitives and keypoint definitions (indexed by SPair id)."""

    category: str
    params: dict[str, float]
    primitives: tuple[Primitive, ...]
    keypoint_defs: tuple[KeypointDef, ...]

    def keypoints(self) -> torch.Tensor:
        """``[K x 3]`` float64 canonical keypoints."""
        out = []
        for d in self.keypoint_defs:
            ell = torch.tensor([d.ell], dtype=torch.float64)
            out.append(self.primitives[d.prim].point(ell)[0])
        return torch.stack(out)

    def keypoint_tolerance(self) -> np.ndarray:
        """``[K]`` extra visibility tolerance in metres."""
        return np.array([d.tol for d in self.keypoint_defs])

    def bound_points(self) -> np.ndarray:
        """``[M x 3]`` points covering every primitive (for framing and extents)."""
        return np.concatenate([p.bound_points() for p in self.primitives])

    def parts(self) -> np.ndarray:
        """``[P]`` part id of each primitive."""
        return np.array([p.part for p in self.primitives])

    def sample_surface(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """About ``n`` points on the union's outer surface, area-weighted.

        Returns:
            dict with ``points [M x 3]``, ``prim [M]``, ``part [M]``, ``ell [M x 3]`` (points
            inside or on another primitive are dropped, so only the outer hull remains).
        """
        areas = np.array([p.area() for p in self.primitives])
        counts = rng.multinomial(n, areas / areas.sum())
        pts, prim, ells = [], [], []
        for i, (p, m) in enumerate(zip(self.primitives, counts, strict=True)):
            x, ell = p.sample(int(m), rng)
            inside = torch.zeros(len(x), dtype=torch.bool)
            for j, q in enumerate(self.primitives):
                if j != i:
                    inside |= q.contains(x, shrink=-1e-6)  # drop shared caps too
            pts.append(x[~inside])
            ells.append(ell[~inside])
            prim.append(torch.full((int((~inside).sum()),), i, dtype=torch.long))
        prim_t = torch.cat(prim)
        return {
            "points": torch.cat(pts),
            "prim": prim_t,
            "part": torch.as_tensor(self.parts())[prim_t],
            "ell": torch.cat(ells),
        }


@dataclass(frozen=True)
class Family:
    """A parametric shape family of one SPair category."""

    category: str
    ranges: dict[str, tuple[float, float]]  # parameter -> (low, high), drawn uniformly
    keypoint_names: tuple[str, ...]
    part_names: tuple[str, ...]
    build: Callable[[dict[str, float]], tuple[list[Primitive], list[KeypointDef]]]
    palette: Callable[[np.random.Generator], np.ndarray]  # [P + 1 x 3] RGB in [0, 1]; last=decal
    decal: Callable[[int, torch.Tensor], torch.Tensor] | None = None  # (part, ell) -> [N] bool

    def mean_params(self) -> dict[str, float]:
        return {k: 0.5 * (lo + hi) for k, (lo, hi) in self.ranges.items()}

    def sample_params(self, rng: np.random.Generator) -> dict[str, float]:
        return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in self.ranges.items()}

    def instance(self, params: dict[str, float]) -> Instance:
        missing = set(self.ranges) - set(params)
        if missing:
            raise ValueError(f"{self.category}: missing shape parameters {sorted(missing)}")
        prims, kps = self.build(params)
        return Instance(self.category, dict(params), tuple(prims), tuple(kps))

    def sample(self, rng: np.random.Generator) -> Instance:
        return self.instance(self.sample_params(rng))

    def template(self) -> Instance:
        return self.instance(self.mean_params())


# ------------------------------------------------------------------------------ helpers
def box(origin, frame: np.ndarray, size: tuple[float, ...], part: int) -> Primitive:
    """Tapered box, ``size = (a1, a2, b1, b2, o1, o2, h)`` (see ``primitives``)."""
    return Primitive("box", np.asarray(origin, float), frame, size, part)


def upbox(center, half, part: int) -> Primitive:
    """Axis-aligned box; local ``u`` = x, ``v`` = z (front), ``w`` = y (0 bottom, 1 top)."""
    cx, cy, cz = center
    hx, hy, hz = half
    return box((cx, cy - hy, cz), UP_FRAME, (hx, hz, hx, hz, 0.0, 0.0, 2 * hy), part)


def frustum(origin, frame: np.ndarray, r0: float, r1: float, h: float, part: int) -> Primitive:
    return Primitive("frustum", np.asarray(origin, float), frame, (r0, r1, h), part)


def axis_frame(e3: np.ndarray, e1: np.ndarray) -> np.ndarray:
    """Orthonormal frame with third axis ``e3`` and first axis ``e1`` (made orthogonal)."""
    e3 = e3 / np.linalg.norm(e3)
    e1 = e1 - (e1 @ e3) * e3
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(e3, e1)
    return np.stack([e1, e2, e3], 1)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def mirror_pair(prims: list[Primitive], p: Primitive) -> tuple[int, int]:
    """Append a left (+x) primitive and its mirror image; return their indices."""
    prims.append(p)
    prims.append(p.mirrored())
    return len(prims) - 2, len(prims) - 1


def lr(*names: str) -> tuple[str, ...]:
    """``("a", "b")`` -> ``("a left", "a right", "b left", "b right")``: SPair lists partners
    next to each other, the +x ('left') one first."""
    return tuple(f"{n} {side}" for n in names for side in ("left", "right"))


def partner_keypoints(
    prims: tuple[int, int], ell: tuple[float, float, float], tol: float = 0.0
) -> list[KeypointDef]:
    """The same local point on a primitive and on its mirror image (see :func:`mirror_pair`)."""
    return [KeypointDef(prims[0], ell, tol), KeypointDef(prims[1], ell, tol)]


def side_keypoints(
    prim: int, ell: tuple[float, float, float], tol: float = 0.0
) -> list[KeypointDef]:
    """A point and its mirror image on a mirror-symmetric primitive (``u -> -u``)."""
    u, v, w = ell
    return [KeypointDef(prim, (u, v, w), tol), KeypointDef(prim, (-u, v, w), tol)]
