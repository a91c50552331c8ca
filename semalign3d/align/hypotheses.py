"""Initial poses of the canonical cloud ([R], method.md §2.11h).

The canonical frame of a representation is arbitrary (the sparse cloud is placed by a grid
search), so rotations must cover SO(3): the cloud is first turned into its principal-axes frame,
then each hypothesis applies one of the 24 rotations of the cube (ordered so that any prefix is
spread out) followed by seeded uniform random rotations when more are asked for. Mirrored
hypotheses (``x -> -x`` in the principal frame) can be added. Each hypothesis is centred on the
ray through the object's centre at depth ``z_bar`` and scaled so that the projected dense cloud
spans the object's extent. These uninformed starts need Table 5's whole coarse-to-fine schedule
(:func:`cube_starts`). The default is instead one start fitted to each image
(:mod:`semalign3d.align.fitted_starts`, ``cfg.n_fitted_starts``), placed after any cube starts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from semalign3d.align.fitted_starts import fitted_starts
from semalign3d.align.model import AlignModel
from semalign3d.align.placement import box_fit, place
from semalign3d.align.target import TargetBatch
from semalign3d.config import AlignConfig, replace


def cube_rotations(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 24 proper rotations of the cube ``[24 x 3 x 3]``, greedily ordered farthest-first
    from the identity (every prefix is well spread)."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            for r, c in enumerate(perm):
                m[r, c] = signs[r]
            if torch.det(m) > 0:
                mats.append(m)
    rots = torch.stack(mats)
    order = [0]
    # geodesic distance is monotone in -trace(R_a^T R_b)
    dist = -torch.einsum("aij,bij->ab", rots, rots)
    while len(order) < len(rots):
        rest = [i for i in range(len(rots)) if i not in order]
        order.append(max(rest, key=lambda i: float(dist[i, order].min())))
    return rots[order].to(dtype)


def random_rotations(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` uniformly distributed rotations ``[n x 3 x 3]`` (unit quaternions, seeded)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    m = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1)
    return m.reshape(n, 3, 3).to(dtype)


def rotation_hypotheses(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[n x 3 x 3]``: the first ``min(n, 24)`` cube rotations, then random ones."""
    if n < 1:
        raise ValueError(f"need at least one rotation hypothesis, got {n}")
    cube = cube_rotations(dtype)[:n]
    if n <= 24:
        return cube
    return torch.cat([cube, random_rotations(n - 24, seed, dtype)])


def principal_frame(points: torch.Tensor) -> torch.Tensor:
    """Rotation ``[3 x 3]`` (det +1) whose rows are the principal axes of ``[N x 3]`` points,
    largest variance first; ``points_centred @ R.T`` expresses them in that frame."""
    c = points - points.mean(0)
    _, _, vh = torch.linalg.svd(c.double(), full_matrices=True)
    if torch.det(vh) < 0:
        vh = vh.clone()
        vh[2] = -vh[2]
    return vh.to(points.dtype)


def cube_starts(cfg: AlignConfig, n: int) -> AlignConfig:
    """``cfg`` with ``n`` uninformed cube-rotation starts instead of fitted ones, and the whole
    coarse-to-fine schedule they need (Table 5 as published: ``schedule_skip`` 0)."""
    return replace(cfg, n_rotations=n, n_fitted_starts=0, schedule_skip=0.0)


def gather_hypotheses(x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Columns ``sel [I x k]`` of ``x [I x H x ...]`` (per image, some of its hypotheses)."""
    idx = sel.reshape(*sel.shape, *([1] * (x.dim() - 2))).expand(*sel.shape, *x.shape[2:])
    return torch.gather(x, 1, idx)


@dataclass(frozen=True)
class Hypotheses:
    """Initial state of the optimisation.

    Attributes:
        keypoints: ``[I x H x K x 3]`` camera-frame keypoints.
        focal_inv: ``[I x H]`` inverse focal lengths.
        rotations: ``[I x H x 3 x 3]`` rotation of the principal-frame cloud into the camera
            (det -1 for a mirrored start).
        fitted: ``[H]`` bool: the start was fitted to the image
            (:mod:`semalign3d.align.fitted_starts`), not a fixed cube rotation.
    """

    keypoints: torch.Tensor
    focal_inv: torch.Tensor
    rotations: torch.Tensor
    fitted: torch.Tensor

    @property
    def mirrored(self) -> torch.Tensor:
        """``[I x H]`` bool: the start is a mirror image of the canonical cloud."""
        return torch.linalg.det(self.rotations) < 0


def initial_hypotheses(batch: TargetBatch, model: AlignModel, cfg: AlignConfig) -> Hypotheses:
    """``cfg.n_rotations`` cube-rotated copies of the canonical cloud in front of every image's
    object (x2 with ``cfg.mirror_hypotheses``; see the module docstring), then
    ``cfg.n_fitted_starts`` poses fitted to each image (:mod:`semalign3d.align.fitted_starts`,
    chosen among ``cfg.fit_candidates`` rotations, mirrored ones too with
    ``cfg.mirror_hypotheses``)."""
    if cfg.n_rotations + cfg.n_fitted_starts < 1:
        raise ValueError("need at least one hypothesis: n_rotations + n_fitted_starts is 0")
    if cfg.n_rotations > 0 and cfg.schedule_skip > 0:
        raise ValueError(
            f"{cfg.n_rotations} cube-rotation starts with schedule_skip {cfg.schedule_skip}: "
            "uninformed starts need the whole coarse-to-fine schedule, so set schedule_skip: 0 "
            "with them (semalign3d.align.hypotheses.cube_starts), or n_rotations: 0 for the "
            "default start fitted to the image"
        )
    dev, dt = batch.cells.device, batch.cells.dtype
    kps = model.sparse_xyz.to(dev, dt)
    dense = model.deform(kps[None])[0]
    centre = kps.mean(0)
    frame = principal_frame(dense)
    kps_f = (kps - centre) @ frame.T
    dense_f = (dense - centre) @ frame.T
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0], device=dev, dtype=dt))

    def with_mirrors(rots: torch.Tensor) -> torch.Tensor:
        return torch.cat([rots, rots @ flip]) if cfg.mirror_hypotheses else rots

    i_n = batch.num_images
    parts_k, parts_r = [], []
    if cfg.n_rotations > 0:
        rots = with_mirrors(rotation_hypotheses(cfg.n_rotations, cfg.seed, dt).to(dev))
        rots_i = rots.expand(i_n, -1, 3, 3)
        a, b = box_fit(dense_f @ rots.transpose(-1, -2), batch)
        parts_k.append(place(kps_f, rots_i, a, b, batch, 1.0 / abs(cfg.focal_init_inv)))
        parts_r.append(rots_i)
    n_cube = sum(p.shape[1] for p in parts_k)
    if cfg.n_fitted_starts > 0:
        cands = with_mirrors(rotation_hypotheses(cfg.fit_candidates, cfg.seed + 1, dt).to(dev))
        cam, r3, sel = fitted_starts(batch, model, cfg, kps_f, cands, cfg.n_fitted_starts)
        parts_k.append(gather_hypotheses(cam, sel))
        parts_r.append(gather_hypotheses(r3, sel))
    keypoints = torch.cat(parts_k, 1)
    h_n = keypoints.shape[1]
    focal_inv = torch.full((i_n, h_n), abs(cfg.focal_init_inv), device=dev, dtype=dt)
    fitted = torch.arange(h_n, device=dev) >= n_cube
    return Hypotheses(keypoints, focal_inv, torch.cat(parts_r, 1), fitted)
