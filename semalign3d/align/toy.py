"""A small self-contained scene for tests, benchmarks and the book: a box-shaped class
representation with smooth position-dependent features, and renderings of it from known poses.

The box's 8 corners are the keypoints; surface points are trilinear combinations of the corners,
so the dense cloud deforms with the keypoints exactly as a built representation does. A point's
feature is a fixed random smooth function of its canonical position, optionally made
mirror-symmetric in ``x`` (``symmetry`` in [0, 1], as in the synthetic dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semalign3d.models.base import DescriptorMap, FeatureGrid
from semalign3d.prior.representation import ClassRepresentation
from semalign3d.prior.statistics import fit_relations, noisy_copies

BOX = (0.06, 0.036, 0.024)  # half-extents along x, y, z (projects to ~0.5 at z = 1, f = 5)


def _corners(dtype: torch.dtype) -> torch.Tensor:
    s = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=dtype)
    return s * torch.tensor(BOX, dtype=dtype)


def trilinear(unit: torch.Tensor) -> torch.Tensor:
    """Weights ``[N x 8]`` of the box corners for points with box coordinates ``[N x 3]`` in
    [-1, 1] (corner order of :func:`_corners`)."""
    w = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                s = torch.tensor([sx, sy, sz], dtype=unit.dtype)
                w.append(((1 + s * unit) / 2).prod(-1))
    return torch.stack(w, -1)


def surface_unit(n: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``n`` points on the faces of the cube [-1, 1]^3 (area-weighted for the box)."""
    ex, ey, ez = BOX
    areas = torch.tensor([ey * ez, ey * ez, ex * ez, ex * ez, ex * ey, ex * ey])
    face = torch.multinomial(areas, n, replacement=True, generator=generator)
    u = torch.rand(n, 3, generator=generator, dtype=dtype) * 2 - 1
    axis, sign = face // 2, (face % 2).to(dtype) * 2 - 1
    u[torch.arange(n), axis] = sign
    return u


@dataclass(frozen=True)
class FeatureField:
    """Smooth unit features of canonical positions: ``normalize(W cos(B x + c))``."""

    b: torch.Tensor
    c: torch.Tensor
    w: torch.Tensor
    symmetry: float = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[N x 3]`` canonical positions -> ``[N x C]`` unit features."""
        xs = x.clone()
        xs[:, 0] = (1 - self.symmetry) * x[:, 0] + self.symmetry * x[:, 0].abs()
        return F.normalize(torch.cos(xs @ self.b.to(x).T + self.c.to(x)) @ self.w.to(x).T, dim=-1)


def feature_field(channels: int, seed: int, symmetry: float = 0.0) -> FeatureField:
    g = torch.Generator().manual_seed(seed)
    return FeatureField(
        b=torch.randn(64, 3, generator=g, dtype=torch.float64) * 12.0,
        c=torch.rand(64, generator=g, dtype=torch.float64) * 2 * math.pi,
        w=torch.randn(channels, 64, generator=g, dtype=torch.float64),
        symmetry=symmetry,
    )


def toy_representation(
    n_dense: int = 300, channels: int = 16, seed: int = 0, symmetry: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[ClassRepresentation, FeatureField]:
    """The box representation (``K = 8``) with a Beta prior fitted to jittered boxes."""
    g = torch.Generator().manual_seed(seed)
    field_ = feature_field(channels, seed, symmetry)
    corners = _corners(torch.float64)
    unit = surface_unit(n_dense, g, torch.float64)
    wts = trilinear(unit)
    dense = wts @ corners
    k = corners.shape[0]
    samples = noisy_copies(corners[None].expand(8, k, 3).clone(), 10, 0.05, g)
    prior, _ = fit_relations(samples, use_tets=True, min_samples=40)
    rep = ClassRepresentation(
        category="toybox",
        keypoint_ids=torch.arange(k),
        sparse_xyz=corners.to(dtype),
        sparse_features=field_(corners).to(dtype),
        sparse_sim_mean=torch.full((k,), 0.8, dtype=dtype),
        sparse_sim_std=torch.full((k,), 0.15, dtype=dtype),
        dense_xyz=dense.to(dtype),
        dense_features=field_(dense).to(dtype),
        dense_sim_mean=torch.full((n_dense,), 0.9, dtype=dtype),
        dense_sim_std=torch.full((n_dense,), 0.1, dtype=dtype),
        dense_weight=torch.ones(n_dense, dtype=dtype),
        dense_from_sparse=wts.to(dtype),
        # a face seen from its outside half-space: the mean view direction is along its normal
        dense_facing=(0.6 * (unit.abs() == 1).to(dtype) * unit.sign()).to(dtype),
        prior=prior.to(dtype=dtype),
        # outwards along the corner's diagonal (the length is chosen, not derived)
        sparse_facing=(0.5 * F.normalize(corners, dim=-1)).to(dtype),
    )
    return rep, field_


@dataclass(frozen=True)
class ToyView:
    """A rendering: descriptors, object mask ``[H x W]`` and the true camera-frame keypoints."""

    descriptors: DescriptorMap
    mask: torch.Tensor
    keypoints: torch.Tensor
    keypoints_2d: torch.Tensor
    focal: float


def render(
    field_: FeatureField,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    focal: float = 5.0,
    size: tuple[int, int] = (240, 320),
    grid: int = 24,
    noise: float = 0.1,
    seed: int = 0,
    n_surface: int = 20000,
) -> ToyView:
    """Render the box under ``X_cam = R X + t`` into a ``grid x grid`` descriptor map: each cell
    shows the nearest surface point's feature (z-buffer) plus noise, background cells show noise.
    """
    g = torch.Generator().manual_seed(seed)
    h_img, w_img = size
    fg = FeatureGrid(h_img, w_img, grid, grid)
    corners = _corners(torch.float64)
    surf = trilinear(surface_unit(n_surface, g, torch.float64)) @ corners
    r, t = rotation.double(), translation.double()
    cam = surf @ r.T + t
    s = float(max(h_img, w_img))
    pp = torch.tensor([w_img / (2 * s), h_img / (2 * s)], dtype=torch.float64)
    px = (focal * cam[:, :2] / cam[:, 2:3] + pp) * s
    cr = fg.pixels_to_grid(px).round().long()
    inside = (cr >= 0).all(-1) & (cr[:, 0] < grid) & (cr[:, 1] < grid)
    cell = cr[:, 1] * grid + cr[:, 0]
    z = torch.where(inside, cam[:, 2], torch.full_like(cam[:, 2], float("inf")))
    order = torch.argsort(z, descending=True)  # nearest written last wins
    front = torch.full((grid * grid,), -1, dtype=torch.long)
    front[cell[order][inside[order]]] = order[inside[order]]
    c = field_.w.shape[0]
    feats = torch.randn(grid * grid, c, generator=g, dtype=torch.float64)
    hit = front >= 0
    feats[hit] = field_(surf[front[hit]]) + noise * feats[hit] / math.sqrt(c)
    feats = F.normalize(feats, dim=-1).T.reshape(c, grid, grid).float()
    yy, xx = torch.meshgrid(torch.arange(h_img), torch.arange(w_img), indexing="ij")
    pix = torch.stack([xx, yy], -1).reshape(-1, 2).double() + 0.5
    pc = fg.pixels_to_grid(pix).round().long().clamp(0, grid - 1)
    mask = hit[pc[:, 1] * grid + pc[:, 0]].reshape(h_img, w_img)
    kc = corners @ r.T + t
    k2 = (focal * kc[:, :2] / kc[:, 2:3] + pp) * s
    return ToyView(DescriptorMap(feats, fg), mask, kc, k2, focal)
