"""Keypoint transfer between two images.

* :func:`nn_match`: the nearest-neighbour baseline (cosine similarity of descriptors), the
  "DINO+SD / GeoAware" row of the paper's Table 1 once real encoders are used.
* :func:`readout`: the shared read-out of a score map to pixels (argmax, with optional window
  soft-argmax refinement as in GeoAware-SC), used by every matcher.
* :func:`transfer`: SemAlign3D's Eq. 14 (method.md §2.12): query pixel -> most likely model point
  of the aligned source model -> most likely pixel of the aligned target model, both by
  ``p_sem x`` a Gaussian of width ``sigma_sparse_inference`` around the projected point.
* :func:`partner_redirect`: which target keypoint Eq. 14 lands on when the target fit may be
  the mirror twin (a keypoint hidden in the fit whose left/right partner faces the camera).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semalign3d.align.semantic import log_p_sem
from semalign3d.models.base import DescriptorMap, FeatureGrid


def readout(
    scores: torch.Tensor, grid: FeatureGrid, window: int = 0, temperature: float = 0.02
) -> torch.Tensor:
    """Pixel location of the best cell of each score map.

    Args:
        scores: ``[N x h x w]``; padding cells are ignored.
        grid: the target image's grid.
        window: 0 = plain argmax; ``w > 0`` = soft-argmax over the ``(2w+1)^2`` window around the
            argmax with weights ``softmax(scores / temperature)``.
        temperature: soft-argmax temperature (GeoAware-SC: 0.02 on cosine similarities).
    Returns:
        ``[N x 2]`` pixel coordinates ``(x, y)``.
    """
    n, h, w = scores.shape
    if n == 0:
        return scores.new_zeros(0, 2)
    valid = grid.valid_cells().to(scores.device)
    s = scores.masked_fill(~valid, float("-inf")).reshape(n, -1)
    best = s.argmax(-1)
    row, col = (best // w).to(scores.dtype), (best % w).to(scores.dtype)
    if window > 0:
        ii = torch.arange(h, device=scores.device, dtype=scores.dtype)
        jj = torch.arange(w, device=scores.device, dtype=scores.dtype)
        near = ((ii[None, :, None] - row[:, None, None]).abs() <= window) & (
            (jj[None, None, :] - col[:, None, None]).abs() <= window
        )
        logits = (s.reshape(n, h, w) / temperature).masked_fill(~near, float("-inf"))
        p = logits.reshape(n, -1).softmax(-1).reshape(n, h, w)
        row = (p * ii[None, :, None]).sum((1, 2))
        col = (p * jj[None, None, :]).sum((1, 2))
    return grid.grid_to_pixels(torch.stack([col, row], -1))


def nn_match(
    src: DescriptorMap,
    trg: DescriptorMap,
    src_kps: torch.Tensor,
    window: int = 0,
    temperature: float = 0.02,
) -> torch.Tensor:
    """Nearest-neighbour keypoint transfer.

    Args:
        src, trg: unit-norm descriptor maps ``[C x h x w]`` of the source and target images.
        src_kps: ``[N x 2]`` source pixel coordinates.
        window, temperature: see :func:`readout`.
    Returns:
        ``[N x 2]`` predicted target pixel coordinates.
    """
    if src_kps.shape[0] == 0:
        return src_kps.new_zeros(0, 2)
    q = src.grid.sample(src.features, src_kps.to(src.features.dtype))  # [N x C]
    c, h, w = trg.features.shape
    sims = q @ F.normalize(trg.features.reshape(c, -1), dim=0)  # [N x h*w]
    return readout(sims.reshape(-1, h, w), trg.grid, window, temperature)


def _normalised_cells(grid: FeatureGrid, device, dtype) -> torch.Tensor:
    return grid.cell_centers().to(device, dtype) / float(grid.side)


def transfer(
    src: DescriptorMap,
    trg: DescriptorMap,
    src_kps: torch.Tensor,
    src_points: torch.Tensor,
    trg_points: torch.Tensor,
    point_features: torch.Tensor,
    sim_mean: torch.Tensor,
    sim_std: torch.Tensor,
    sigma: float,
    p_sem: str = "calibrated",
    sigma_sem: float = 0.3,
    window: int = 0,
    temperature: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 14: keypoint transfer through two aligned copies of the model.

    ``i* = argmax_i p_sem(F_1(q), phi_i) exp(-|q - pi_1(c_i)|^2 / 2 sigma^2)``, then
    ``q_2 = argmax_u p_sem(F_2(u), phi_i*) exp(-|u - pi_2(c_i*)|^2 / 2 sigma^2)``, distances in
    normalised units (fractions of each image's longer side). The calibrated ``p_sem`` is flat
    above a point's training mean, so the raw similarity is added with a 1e-3 weight to rank
    those ties semantically rather than by cell order.

    Args:
        src, trg: unit descriptor maps ``[C x h x w]`` of the two images.
        src_kps: ``[Q x 2]`` query pixels in the source.
        src_points, trg_points: ``[M x 2]`` model points projected into each image (pixels).
        point_features: ``[M x C]`` unit features of the model points.
        sim_mean, sim_std: ``[M]`` similarity statistics (calibrated ``p_sem``).
        sigma: ``sigma_sparse_inference`` (normalised units).
        p_sem, sigma_sem: the semantic likelihood form (see :mod:`semalign3d.align.semantic`).
        window, temperature: optional soft-argmax refinement, see :func:`readout`.
    Returns:
        ``(pred [Q x 2] target pixels, point [Q] index of the model point each query used)``.
    """
    m = point_features.shape[0]
    if not (src_points.shape[0] == trg_points.shape[0] == sim_mean.shape[0] == m):
        raise ValueError(
            f"model point count mismatch: {src_points.shape[0]} source projections, "
            f"{trg_points.shape[0]} target projections, {m} features, {sim_mean.shape[0]} stats"
        )
    if src_kps.shape[0] == 0:
        return src_kps.new_zeros(0, 2), torch.zeros(0, dtype=torch.long)
    dt = src.features.dtype
    phi = point_features.to(src.features.device, dt)
    q = src.grid.sample(src.features, src_kps.to(dt))  # [Q x C]
    s1 = q @ phi.T
    qn = src_kps.to(dt) / float(src.grid.side)
    p1 = src_points.to(dt) / float(src.grid.side)
    score1 = log_p_sem(s1, sim_mean, sim_std, p_sem, sigma_sem) + 1e-3 * s1
    score1 = score1 - torch.cdist(qn, p1) ** 2 / (2 * sigma**2)
    best = score1.argmax(-1)  # [Q]
    c, h, w = trg.features.shape
    s2 = phi[best] @ trg.features.reshape(c, -1)  # [Q x h*w]
    cells = _normalised_cells(trg.grid, s2.device, dt)
    p2 = trg_points.to(dt)[best] / float(trg.grid.side)
    score2 = log_p_sem(s2, sim_mean[best, None], sim_std[best, None], p_sem, sigma_sem)
    score2 = score2 + 1e-3 * s2 - torch.cdist(p2, cells) ** 2 / (2 * sigma**2)
    return readout(score2.reshape(-1, h, w), trg.grid, window, temperature), best


def partner_redirect(
    facing_cos: torch.Tensor, partner: torch.Tensor, margin: float
) -> torch.Tensor:
    """Per model keypoint, the keypoint whose target projection Eq. 14 lands on ([R], ours).

    With mirror-symmetric descriptors a fit can be the mirror twin of the true pose: every
    keypoint sits where its left/right partner is. A keypoint that was visible in the source
    and is being matched is assumed visible in the target too (the benchmark scores only such
    keypoints). So where the target fit turns a keypoint's partner towards the camera by more
    than ``margin`` in facing cosine beyond the keypoint itself
    (:func:`semalign3d.align.visibility.facing_cosine`), the partner's projection is the better
    landing point. Keypoints without a partner (``partner[k] == k``) stay put.

    Args:
        facing_cos: ``[K]`` facing cosines of the target fit's keypoints.
        partner: ``[K]`` long, each keypoint's mirror partner (itself when it has none).
        margin: cosine lead the partner needs (>= 0, so at most one of a pair moves).
    Returns:
        ``[K]`` long indices into the target keypoints.
    Raises:
        ValueError: shapes differ or ``margin`` < 0.
    """
    if facing_cos.shape != partner.shape:
        raise ValueError(f"facing_cos {tuple(facing_cos.shape)} and partner "
                         f"{tuple(partner.shape)} must both be [K]")
    if margin < 0:
        raise ValueError(f"partner margin must be >= 0, got {margin}")
    keep = torch.arange(partner.shape[0], device=partner.device)
    return torch.where(facing_cos[partner] > facing_cos + margin, partner, keep)
