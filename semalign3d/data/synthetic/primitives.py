"""Convex solid primitives: local coordinates, ray intersection and surface sampling.

Every primitive lives in a local frame ``q = F^T (p - origin)`` where ``F`` is a ``[3 x 3]``
orthonormal matrix whose columns are the local axes in the canonical frame (``det F = +-1``, so a
mirrored primitive is just ``(M origin, M F)`` with ``M = diag(-1, 1, 1)``). Points of the solid
also get *normalised local coordinates* ``l = (u, v, w)``:

* ``box`` (a tapered, sheared box): bottom rectangle of half sizes ``(a1, a2)`` at ``q3 = 0``,
  top rectangle of half sizes ``(b1, b2)`` centred at ``(o1, o2)`` at ``q3 = h``; every face is
  planar. ``q1 = w o1 + ((1 - w) a1 + w b1) u``, ``q2 = w o2 + ((1 - w) a2 + w b2) v``,
  ``q3 = h w`` with ``u, v in [-1, 1]``, ``w in [0, 1]``.
* ``frustum`` (capped truncated cone, a cylinder when ``r0 == r1``): ``q1 = r(w) u``,
  ``q2 = r(w) v``, ``q3 = h w`` with ``r(w) = (1 - w) r0 + w r1``, ``u^2 + v^2 <= 1``.
* ``ellipsoid`` with semi-axes ``(a, b, c)``: ``q = (a u, b v, c w)``, ``|l| <= 1``.

The same ``l`` on the same primitive of two instances of a shape family is the same semantic
surface point, which is how instances are put in correspondence with the family template.
Ray casting is exact (no splatting holes). Rays start at one shared origin (the camera centre),
outside every solid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

KINDS = ("box", "frustum", "ellipsoid")
MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Primitive:
    """One convex solid.

    Attributes:
        kind: ``"box"``, ``"frustum"`` or ``"ellipsoid"``.
        origin: ``[3]`` local origin in the canonical frame.
        frame: ``[3 x 3]`` orthonormal, columns are the local axes.
        size: ``box``: ``(a1, a2, b1, b2, o1, o2, h)``; ``frustum``: ``(r0, r1, h)``;
            ``ellipsoid``: ``(a, b, c)``.
        part: semantic part id (shared by a part and its mirror image).
    """

    kind: str
    origin: np.ndarray
    frame: np.ndarray
    size: tuple[float, ...]
    part: int
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown primitive kind '{self.kind}'; expected one of {KINDS}")
        n = {"box": 7, "frustum": 3, "ellipsoid": 3}[self.kind]
        if len(self.size) != n:
            raise ValueError(f"a {self.kind} needs {n} size values, got {len(self.size)}")
        object.__setattr__(self, "origin", np.asarray(self.origin, dtype=np.float64))
        object.__setattr__(self, "frame", np.asarray(self.frame, dtype=np.float64))
        object.__setattr__(self, "size", tuple(float(s) for s in self.size))
        if not np.allclose(self.frame.T @ self.frame, np.eye(3), atol=1e-9):
            raise ValueError("primitive frame must be orthonormal")

    def mirrored(self) -> Primitive:
        """The mirror image under ``x -> -x`` (same local coordinates, mirrored points)."""
        return Primitive(self.kind, MIRROR @ self.origin, MIRROR @ self.frame, self.size, self.part)

    # ------------------------------------------------------------------------- coordinates
    def to_local(self, points: torch.Tensor) -> torch.Tensor:
        """Canonical ``[N x 3]`` -> local metric ``q [N x 3]``."""
        o, f = _t(self.origin, points), _t(self.frame, points)
        return (points - o) @ f

    def from_local(self, q: torch.Tensor) -> torch.Tensor:
        """Local metric ``q [N x 3]`` -> canonical ``[N x 3]``."""
        o, f = _t(self.origin, q), _t(self.frame, q)
        return q @ f.T + o

    def point(self, ell: torch.Tensor) -> torch.Tensor:
        """Normalised local coordinates ``l [N x 3]`` -> canonical points ``[N x 3]``."""
        u, v, w = ell.unbind(-1)
        if self.kind == "box":
            a1, a2, b1, b2, o1, o2, h = self.size
            q = torch.stack(
                [w * o1 + ((1 - w) * a1 + w * b1) * u, w * o2 + ((1 - w) * a2 + w * b2) * v, h * w],
                -1,
            )
        elif self.kind == "frustum":
            r0, r1, h = self.size
            r = (1 - w) * r0 + w * r1
            q = torch.stack([r * u, r * v, h * w], -1)
        else:
            q = ell * _t(np.array(self.size), ell)
        return self.from_local(q)

    def local(self, points: torch.Tensor) -> torch.Tensor:
        """Canonical points ``[N x 3]`` (on or in the solid) -> ``l [N x 3]``."""
        q = self.to_local(points)
        return self._ell_of_q(q)

    def _ell_of_q(self, q: torch.Tensor) -> torch.Tensor:
        q1, q2, q3 = q.unbind(-1)
        if self.kind == "box":
            a1, a2, b1, b2, o1, o2, h = self.size
            w = q3 / h
            u = (q1 - w * o1) / ((1 - w) * a1 + w * b1)
            v = (q2 - w * o2) / ((1 - w) * a2 + w * b2)
            return torch.stack([u, v, w], -1)
        if self.kind == "frustum":
            r0, r1, h = self.size
            w = q3 / h
            r = (1 - w) * r0 + w * r1
            return torch.stack([q1 / r, q2 / r, w], -1)
        return q / _t(np.array(self.size), q)

    def contains(self, points: torch.Tensor, shrink: float = 0.0) -> torch.Tensor:
        """``[N]`` bool: points strictly inside the solid shrunk by ``shrink`` (relative)."""
        ell = self._ell_of_q(self.to_local(points))
        lim = 1.0 - shrink
        u, v, w = ell.unbind(-1)
        if self.kind == "box":
            return (u.abs() < lim) & (v.abs() < lim) & (w > shrink) & (w < lim)
        if self.kind == "frustum":
            return (u * u + v * v < lim * lim) & (w > shrink) & (w < lim)
        return (ell * ell).sum(-1) < lim * lim

    # ------------------------------------------------------------------------- bounds
    def bound_points(self) -> np.ndarray:
        """``[M x 3]`` canonical points whose convex hull contains the solid."""
        if "bound" not in self._cache:
            if self.kind == "box":
                g = np.array([[u, v, w] for u in (-1, 1) for v in (-1, 1) for w in (0, 1)], float)
            elif self.kind == "frustum":
                # a 16-gon circumscribing the circle (its vertices lie at radius 1 / cos(pi/16))
                a = np.linspace(0, 2 * math.pi, 16, endpoint=False)
                ring = np.stack([np.cos(a), np.sin(a)], -1) / math.cos(math.pi / 16)
                g = np.concatenate(
                    [np.concatenate([ring, np.full((16, 1), w)], -1) for w in (0.0, 1.0)]
                )
            else:
                g = np.array([[u, v, w] for u in (-1, 1) for v in (-1, 1) for w in (-1, 1)], float)
            pts = self.point(torch.from_numpy(g)).numpy()
            self._cache["bound"] = pts
        return self._cache["bound"]

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        """``(centre [3], radius)`` enclosing the solid."""
        if "sphere" not in self._cache:
            pts = self.bound_points()
            c = 0.5 * (pts.min(0) + pts.max(0))
            r = float(np.linalg.norm(pts - c, axis=-1).max())
            self._cache["sphere"] = (c, r * 1.001 + 1e-9)
        return self._cache["sphere"]

    # ------------------------------------------------------------------------- ray casting
    def intersect(
        self, origin: torch.Tensor, dirs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """First intersection of rays ``origin + t dirs`` (``t > 0``) with the solid.

        Args:
            origin: ``[3]`` canonical ray origin (outside the solid).
            dirs: ``[N x 3]`` canonical directions (any length).
        Returns:
            ``(t [N], normal [N x 3], ell [N x 3])``: ``t = inf`` on a miss; unit outward
            canonical normals and normalised local coordinates of the hit point.
        """
        qo = self.to_local(origin[None])[0]
        qd = dirs @ _t(self.frame, dirs)
        if self.kind == "box":
            t, n = _hit_box(qo, qd, self.size)
        elif self.kind == "frustum":
            t, n = _hit_frustum(qo, qd, self.size)
        else:
            t, n = _hit_ellipsoid(qo, qd, self.size)
        hit = torch.isfinite(t)
        q = qo + torch.where(hit, t, torch.zeros_like(t))[:, None] * qd
        ell = self._clamp(self._ell_of_q(q))
        n = torch.nn.functional.normalize(n, dim=-1) @ _t(self.frame, n).T
        return t, n, ell

    def _clamp(self, ell: torch.Tensor) -> torch.Tensor:
        """Project numerically-off local coordinates back onto the solid's parameter domain."""
        u, v, w = ell.unbind(-1)
        if self.kind == "box":
            return torch.stack([u.clamp(-1, 1), v.clamp(-1, 1), w.clamp(0, 1)], -1)
        if self.kind == "frustum":
            r = torch.sqrt(u * u + v * v).clamp_min(1.0)
            return torch.stack([u / r, v / r, w.clamp(0, 1)], -1)
        r = ell.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return ell / r

    # ------------------------------------------------------------------------- sampling
    def area(self) -> float:
        """Surface area of the solid (approximate for ellipsoids)."""
        if self.kind == "box":
            return float(sum(_quad_area(c) for c in self._faces_corners()))
        if self.kind == "frustum":
            r0, r1, h = self.size
            return math.pi * (r0 + r1) * math.hypot(h, r1 - r0) + math.pi * (r0 * r0 + r1 * r1)
        a, b, c = self.size  # Knud Thomsen's formula, error < 1.1 %
        p = 1.6075
        return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def _faces(self) -> list[tuple[int, float]]:
        """Box faces as (fixed axis, fixed value) in ``l``."""
        return [(0, -1.0), (0, 1.0), (1, -1.0), (1, 1.0), (2, 0.0), (2, 1.0)]

    def _faces_corners(self) -> list[np.ndarray]:
        out = []
        for axis, val in self._faces():
            free = [i for i in range(3) if i != axis]
            lo = [0.0 if i == 2 else -1.0 for i in free]
            cs = []
            for s, t in ((0, 0), (1, 0), (1, 1), (0, 1)):
                ell = [0.0, 0.0, 0.0]
                ell[axis] = val
                ell[free[0]] = lo[0] if s == 0 else 1.0
                ell[free[1]] = lo[1] if t == 0 else 1.0
                cs.append(ell)
            out.append(self.point(torch.tensor(cs, dtype=torch.float64)).numpy())
        return out

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """About ``n`` points on the solid's surface.

        Returns:
            ``(points [M x 3], ell [M x 3])`` canonical points and their local coordinates.
        """
        if self.kind == "box":
            areas = np.array([_quad_area(c) for c in self._faces_corners()])
            counts = rng.multinomial(n, areas / areas.sum())
            ells = []
            for (axis, val), m in zip(self._faces(), counts, strict=True):
                ell = np.empty((m, 3))
                ell[:, 0] = rng.uniform(-1, 1, m)
                ell[:, 1] = rng.uniform(-1, 1, m)
                ell[:, 2] = rng.uniform(0, 1, m)
                ell[:, axis] = val
                ells.append(ell)
            ell = np.concatenate(ells)
        elif self.kind == "frustum":
            r0, r1, h = self.size
            side = math.pi * (r0 + r1) * math.hypot(h, r1 - r0)
            caps = np.array([math.pi * r0 * r0, math.pi * r1 * r1])
            counts = rng.multinomial(n, np.array([side, *caps]) / (side + caps.sum()))
            # lateral: density of w proportional to r(w) (inverse CDF of a linear density)
            x = rng.uniform(0, 1, counts[0])
            if abs(r1 - r0) < 1e-12:
                w = x
            else:
                w = (np.sqrt(r0 * r0 + x * (r1 * r1 - r0 * r0)) - r0) / (r1 - r0)
            a = rng.uniform(0, 2 * math.pi, counts[0])
            lat = np.stack([np.cos(a), np.sin(a), w], -1)
            cap_ells = []
            for m, wv in zip(counts[1:], (0.0, 1.0), strict=True):
                rr, aa = np.sqrt(rng.uniform(0, 1, m)), rng.uniform(0, 2 * math.pi, m)
                cap_ells.append(np.stack([rr * np.cos(aa), rr * np.sin(aa), np.full(m, wv)], -1))
            ell = np.concatenate([lat, *cap_ells])
        else:
            a, b, c = self.size
            d = rng.normal(size=(4 * n + 16, 3))
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            # rejection by the area element of the map sphere -> ellipsoid
            dens = np.sqrt((b * c * d[:, 0]) ** 2 + (a * c * d[:, 1]) ** 2 + (a * b * d[:, 2]) ** 2)
            keep = rng.uniform(0, dens.max(), len(d)) < dens
            ell = d[keep][:n]
        ell_t = torch.from_numpy(ell)
        return self.point(ell_t), ell_t


def _t(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


def _quad_area(c: np.ndarray) -> float:
    return 0.5 * float(
        np.linalg.norm(np.cross(c[1] - c[0], c[2] - c[0]))
        + np.linalg.norm(np.cross(c[2] - c[0], c[3] - c[0]))
    )


def _hit_box(qo: torch.Tensor, qd: torch.Tensor, size: tuple[float, ...]):
    """Slab test against the box's six half-spaces ``n_k . q <= c_k``."""
    a1, a2, b1, b2, o1, o2, h = size
    normals = qd.new_tensor(
        [
            [1.0, 0.0, -(o1 + b1 - a1) / h],
            [-1.0, 0.0, (o1 - b1 + a1) / h],
            [0.0, 1.0, -(o2 + b2 - a2) / h],
            [0.0, -1.0, (o2 - b2 + a2) / h],
            [0.0, 0.0, -1.0],
            [0.0, 0.0, 1.0],
        ]
    )
    offsets = qd.new_tensor([a1, a1, a2, a2, 0.0, h])
    denom = qd @ normals.T  # [N x 6]
    num = offsets - normals @ qo  # [6]
    safe = torch.where(denom == 0, torch.ones_like(denom), denom)
    tp = num / safe
    inf = torch.full_like(tp, math.inf)
    t_enter, k = torch.where(denom < 0, tp, -inf).max(-1)
    t_exit = torch.where(denom > 0, tp, inf).min(-1).values
    outside = ((denom == 0) & (num < 0)).any(-1)
    hit = (t_enter <= t_exit) & (t_enter > 0) & ~outside
    t = torch.where(hit, t_enter, torch.full_like(t_enter, math.inf))
    return t, normals[k]


def _hit_frustum(qo: torch.Tensor, qd: torch.Tensor, size: tuple[float, ...]):
    r0, r1, h = size
    k = (r1 - r0) / h
    q0 = r0 + k * qo[2]
    q1 = k * qd[:, 2]
    a = qd[:, 0] ** 2 + qd[:, 1] ** 2 - q1 * q1
    b = 2 * (qo[0] * qd[:, 0] + qo[1] * qd[:, 1] - q0 * q1)
    c = qo[0] ** 2 + qo[1] ** 2 - q0 * q0
    disc = b * b - 4 * a * c
    sq = torch.sqrt(disc.clamp_min(0))
    lin = a.abs() < 1e-12
    a_safe = torch.where(lin, torch.ones_like(a), a)
    b_safe = torch.where(b == 0, torch.ones_like(b), b)
    roots = torch.stack([(-b - sq) / (2 * a_safe), (-b + sq) / (2 * a_safe)], -1)
    roots = torch.where(lin[:, None], (-c / b_safe)[:, None].expand_as(roots), roots)
    z = qo[2] + roots * qd[:, 2:3]
    ok = (disc[:, None] >= 0) & (roots > 0) & (z >= 0) & (z <= h)
    inf = torch.full_like(roots, math.inf)
    t_lat = torch.where(ok, roots, inf).min(-1).values
    # caps at q3 = 0 (radius r0) and q3 = h (radius r1)
    dz = torch.where(qd[:, 2] == 0, torch.full_like(qd[:, 2], 1e-300), qd[:, 2])
    caps = []
    for zc, rc in ((0.0, r0), (h, r1)):
        tc = (zc - qo[2]) / dz
        x = qo[0] + tc * qd[:, 0]
        y = qo[1] + tc * qd[:, 1]
        good = (tc > 0) & (x * x + y * y <= rc * rc) & (qd[:, 2] != 0)
        caps.append(torch.where(good, tc, torch.full_like(tc, math.inf)))
    t_all = torch.stack([t_lat, caps[0], caps[1]], -1)
    t, which = t_all.min(-1)
    q = qo + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None] * qd
    n_lat = torch.stack([q[:, 0], q[:, 1], -(r0 + k * q[:, 2]) * k], -1)
    n_cap0 = qd.new_tensor([0.0, 0.0, -1.0]).expand_as(n_lat)
    n_cap1 = qd.new_tensor([0.0, 0.0, 1.0]).expand_as(n_lat)
    n = torch.where(
        (which == 0)[:, None], n_lat, torch.where((which == 1)[:, None], n_cap0, n_cap1)
    )
    return t, n


def _hit_ellipsoid(qo: torch.Tensor, qd: torch.Tensor, size: tuple[float, ...]):
    s = qd.new_tensor(size)
    lo, ld = qo / s, qd / s
    a = (ld * ld).sum(-1)
    b = 2 * (ld @ lo)
    c = (lo * lo).sum() - 1
    disc = b * b - 4 * a * c
    t = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    t = torch.where((disc >= 0) & (t > 0), t, torch.full_like(t, math.inf))
    q = qo + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None] * qd
    return t, q / (s * s)
