"""Test-time object masks on the descriptor grid, and their softening for ``L_background``.

The default source needs no ground truth ([R], method.md §5.2.4): a cell is foreground when its
descriptor resembles some point of the class representation, measured with the calibrated
``p_sem`` (the probability that a training image shows that point with this similarity or less).
A user box or an external pixel mask can be given instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from semalign3d.align.model import AlignModel
from semalign3d.align.semantic import log_p_sem, similarities
from semalign3d.models.base import FeatureGrid, pad_to_square


def feature_foreground(
    features: torch.Tensor, model: AlignModel, floor: float = 1.0
) -> torch.Tensor:
    """Foreground probability of every cell from its descriptor alone.

    The calibrated ``p_sem`` is 1 at or above a point's mean training similarity and falls as a
    two-sided Gaussian tail below it, so a true cell that happens to fall below its points' means
    (most of all at the outline, where descriptors mix with the background) is called partly
    background. ``floor`` < 1 counts every ``p_sem >= floor`` as certain foreground.

    Args:
        features: ``[h x w x C]`` unit descriptors (or ``[P x C]``).
        model: the category model (dense and sparse point features and, when it has them, the
            object prototypes, with their statistics).
        floor: in (0, 1]; the result is ``min(1, max_i p_sem / floor)``.
    Returns:
        ``[h x w]`` (or ``[P]``) in [0, 1].
    """
    if not 0 < floor <= 1:
        raise ValueError(f"foreground floor must be in (0, 1], got {floor}")
    best = None
    for feats, mean, std in (
        (model.dense_features, model.dense_sim_mean, model.dense_sim_std),
        (model.sparse_features, model.sparse_sim_mean, model.sparse_sim_std),
        (model.object_features, model.object_sim_mean, model.object_sim_std),
    ):
        if feats.shape[0] == 0:
            continue
        lp = log_p_sem(similarities(features, feats), mean, std, "calibrated").amax(-1)
        best = lp if best is None else torch.maximum(best, lp)
    return (best.exp() / floor).clamp_max(1)


def smooth(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[h x w]`` (or ``[B x h x w]``) with std ``sigma`` cells;
    zero outside (the padding is background)."""
    if sigma <= 0:
        return mask
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=mask.dtype, device=mask.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    m = mask.reshape(-1, 1, *mask.shape[-2:])
    m = F.conv2d(m, k.reshape(1, 1, 1, -1), padding=(0, r))
    m = F.conv2d(m, k.reshape(1, 1, -1, 1), padding=(r, 0))
    return m.reshape(mask.shape)


def pixel_mask_to_grid(mask: torch.Tensor, grid: FeatureGrid) -> torch.Tensor:
    """Fraction of each cell covered by an ``[H x W]`` pixel mask -> ``[h x w]`` in [0, 1]."""
    if tuple(mask.shape) != (grid.height, grid.width):
        raise ValueError(
            f"mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is {grid.width}x{grid.height}"
        )
    sq = pad_to_square(mask.float()[None, None])
    return F.adaptive_avg_pool2d(sq, (grid.h, grid.w))[0, 0]


def box_to_grid(box: tuple[float, float, float, float], grid: FeatureGrid) -> torch.Tensor:
    """``[h x w]`` float: 1 for cells whose centre lies inside the box ``(x0, y0, x1, y1)`` px."""
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {box}")
    c = grid.cell_centers()
    inside = (c[:, 0] >= x0) & (c[:, 0] <= x1) & (c[:, 1] >= y0) & (c[:, 1] <= y1)
    return inside.float().reshape(grid.h, grid.w)


def depth_to_grid(depth: torch.Tensor, grid: FeatureGrid) -> torch.Tensor:
    """Average pseudo-depth ``[H x W]`` per cell -> ``[h x w]`` (padding cells get the image mean,
    so they pull nothing)."""
    if tuple(depth.shape) != (grid.height, grid.width):
        raise ValueError(
            f"depth map is {depth.shape[-1]}x{depth.shape[-2]} but the image is "
            f"{grid.width}x{grid.height}"
        )
    d = depth.float()
    ones = pad_to_square(torch.ones_like(d)[None, None])
    sq = pad_to_square(d[None, None])
    num = F.adaptive_avg_pool2d(sq, (grid.h, grid.w))[0, 0]
    den = F.adaptive_avg_pool2d(ones, (grid.h, grid.w))[0, 0]
    return torch.where(den > 0, num / den.clamp_min(1e-12), d.mean())
