"""Starting poses fitted to the image ([R], ours: method.md §2.11h leaves the initialisation open).

The cube rotations of :mod:`semalign3d.align.hypotheses` cover SO(3) coarsely and ignore the
image, so they need Table 5's coarse phase to find the object's pose; that phase also pulls a
good start apart (every cell wants a nearby point at sigma = 1, so the cloud shrinks towards the
object's middle). Here many candidate rotations are each fitted to the image before the
optimisation, and the fitted start skips the coarse phase (``schedule_skip``). On the synthetic
validation set the best-scored start alone has aligned-keypoint PCK@0.1 80 (tvmonitor) and
81 (aeroplane), against 30 and 35 for the best of 8 cube starts:

1. a weak-perspective placement (:mod:`semalign3d.align.placement`): the candidate's
   orthographic keypoints ``p_k`` map to the image by a 2D similarity ``a Rot p + b`` (in-plane
   rotation, scale, shift), first the box fit that also places the cube starts;
2. a few ICP rounds: each keypoint takes the cell ``u`` that maximises
   ``log p_sem(u, k) - |u - y_k|^2 / (2 sigma^2)`` (``L_sparse``'s pair likelihood, so tied
   similarities are resolved by distance), and the similarity is refitted to those cells,
   weighted by their likelihood;
3. a score: ``L_dense + L_sparse`` at ``sigma`` plus ``L_background`` (the terms a rigid copy
   of the canonical cloud can change; ``L_geom``, ``L_depth`` and ``L_chiral`` are the same for
   every proper pose of it);
4. the best ``n`` candidates whose rotations differ pairwise by at least ``min_angle`` degrees
   (a mirrored and a proper rotation are always at least 90 degrees apart, so a mirror twin is
   never suppressed by its original).
"""

from __future__ import annotations

import math

import torch

from semalign3d.align.energy import energy_terms
from semalign3d.align.model import AlignModel
from semalign3d.align.placement import box_fit, place
from semalign3d.align.target import TargetBatch
from semalign3d.config import AlignConfig
from semalign3d.geometry import similarity_fit

#: candidates scored at once (bounds the ``[I x J x P x N]`` likelihood table)
_CHUNK = 32


def match_cells(
    points: torch.Tensor,
    cells: torch.Tensor,
    weight: torch.Tensor,
    log_sem: torch.Tensor,
    sigma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best cell of every point under ``L_sparse``'s pair likelihood.

    Args:
        points: ``[I x J x K x 2]`` current image positions (normalised).
        cells: ``[I x P x 2]``; weight: ``[I x P]`` (0 = padding); log_sem: ``[I x P x K]``.
        sigma: spatial width (normalised units).
    Returns:
        ``(matched [I x J x K x 2], log_likelihood [I x J x K])``.
    """
    d2 = ((cells[:, None, :, None, :] - points[:, :, None, :, :]) ** 2).sum(-1)  # [I x J x P x K]
    ll = log_sem[:, None] - d2 / (2 * sigma**2)
    ll = ll.masked_fill((weight <= 0)[:, None, :, None], float("-inf"))
    best, idx = ll.max(-2)  # [I x J x K]
    i_n, j_n, k_n = idx.shape
    matched = torch.gather(cells[:, None].expand(i_n, j_n, -1, 2), 2,
                           idx[..., None].expand(i_n, j_n, k_n, 2))
    return matched, best


def fit_in_plane(
    points: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    batch: TargetBatch,
    sigma: float,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ICP of orthographic keypoints onto the image's semantic evidence (steps 1-2 above).

    Args:
        points: ``[J x K x 2]`` orthographic keypoints of ``J`` candidate rotations (centred).
        scale: ``[I x J]`` and shift ``[I x J x 2]``: the starting similarity (no rotation).
        batch: the images (``sparse_omega``, ``log_sem_sparse``).
        sigma: matching width; iterations: ICP rounds (0 = the starting similarity).
    Returns:
        ``(scale [I x J], rot [I x J x 2 x 2], shift [I x J x 2])`` with
        image position ``= scale * points @ rot.T + shift``.
    """
    i_n, j_n = scale.shape
    p = points[None].expand(i_n, j_n, -1, -1)
    rot = torch.eye(2, dtype=points.dtype, device=points.device).expand(i_n, j_n, 2, 2)
    for _ in range(iterations):
        y = scale[..., None, None] * p @ rot.transpose(-1, -2) + shift[:, :, None]
        # in chunks of candidates: the distance table is [I x J x P x K]
        found = [match_cells(y[:, c : c + _CHUNK], *batch.sparse_omega,
                             batch.log_sem_sparse, sigma) for c in range(0, j_n, _CHUNK)]
        target = torch.cat([f[0] for f in found], 1)
        w = torch.cat([f[1] for f in found], 1).exp()
        ok = w.sum(-1) > 1e-12  # no keypoint found evidence: keep the previous fit
        s_new, r_new, t_new = similarity_fit(p, target, w.clamp_min(1e-30))
        scale = torch.where(ok, s_new, scale)
        rot = torch.where(ok[..., None, None], r_new, rot)
        shift = torch.where(ok[..., None], t_new, shift)
    return scale, rot, shift


def geodesic_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between rotations ``[... x 3 x 3]`` (broadcast)."""
    tr = (a * b).sum((-1, -2))  # trace(a^T b)
    return torch.rad2deg(torch.acos(((tr - 1) / 2).clamp(-1.0, 1.0)))


def select_diverse(
    scores: torch.Tensor, rotations: torch.Tensor, n: int, min_angle: float
) -> torch.Tensor:
    """Greedy non-maximum suppression over rotations.

    Args:
        scores: ``[I x J]`` lower is better; rotations: ``[I x J x 3 x 3]``.
        n: how many to keep (``n <= J``); min_angle: degrees between any two kept ones.
    Returns:
        ``[I x n]`` candidate indices, best first; when fewer than ``n`` candidates are far
        enough apart the rest are the best remaining ones.
    """
    i_n, j_n = scores.shape
    if not 0 < n <= j_n:
        raise ValueError(f"cannot keep {n} of {j_n} candidates")
    out = []
    for i in range(i_n):
        order = scores[i].argsort().tolist()
        kept: list[int] = []
        for j in order:
            if len(kept) == n:
                break
            if not kept or bool(
                (geodesic_angle(rotations[i, j][None], rotations[i, kept]) >= min_angle).all()
            ):
                kept.append(j)
        kept += [j for j in order if j not in kept][: n - len(kept)]
        out.append(kept)
    return torch.tensor(out, dtype=torch.long, device=scores.device)


def fitted_starts(
    batch: TargetBatch,
    model: AlignModel,
    cfg: AlignConfig,
    keypoints: torch.Tensor,
    rotations: torch.Tensor,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every candidate fitted to every image, and the ``n`` best of each (see the module
    docstring).

    Args:
        batch: the images; model: the category model.
        cfg: ``focal_init_inv``, ``fit_sigma``, ``fit_iterations``, ``fit_min_angle`` and the
            energy variants used by the score.
        keypoints: ``[K x 3]`` canonical keypoints, centred.
        rotations: ``[J x 3 x 3]`` candidate rotations (improper ones give mirrored starts).
        n: starts to return per image.
    Returns:
        ``(camera_keypoints [I x J x K x 3], rotation [I x J x 3 x 3], best [I x n])``: the
        fitted poses (rotation = in-plane fit times the candidate) at depth ``batch.z_bar``,
        and the indices of the ones to start from, best first.
    """
    f0 = 1.0 / abs(cfg.focal_init_inv)
    rot_k = keypoints @ rotations.transpose(-1, -2)  # [J x K x 3]
    dense_k = model.deform(keypoints[None])[0] @ rotations.transpose(-1, -2)  # [J x N x 3]
    a0, b0 = box_fit(dense_k, batch)
    a, r2, b = fit_in_plane(rot_k[..., :2], a0, b0, batch, cfg.fit_sigma, cfg.fit_iterations)
    i_n, j_n = a.shape
    r3 = torch.zeros(i_n, j_n, 3, 3, dtype=keypoints.dtype, device=a.device)
    r3[..., :2, :2] = r2
    r3[..., 2, 2] = 1.0
    r3 = r3 @ rotations  # [I x J x 3 x 3]: the in-plane fit after the candidate
    cam = place(keypoints, r3, a, b, batch, f0)  # [I x J x K x 3]
    scores = torch.cat([
        _score(cam[:, c : c + _CHUNK], f0, batch, model, cfg)
        for c in range(0, j_n, _CHUNK)
    ], 1)
    return cam, r3, select_diverse(scores, r3, n, cfg.fit_min_angle)


@torch.no_grad()
def _score(cam: torch.Tensor, f0: float, batch: TargetBatch, model: AlignModel,
           cfg: AlignConfig) -> torch.Tensor:
    """``L_dense + L_sparse`` at ``cfg.fit_sigma`` plus ``L_background``: ``[I x J]``."""
    focal = torch.full(cam.shape[:2], f0, dtype=cam.dtype, device=cam.device)
    terms = energy_terms(cam, focal, batch, model, cfg.fit_sigma, cfg.fit_sigma, cfg)
    s = terms["dense"] + terms["sparse"] + terms["background"]
    return torch.where(torch.isfinite(s), s, torch.full_like(s, math.inf))
