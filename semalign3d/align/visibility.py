"""Soft self-occlusion of the dense cloud ([R], method.md §7).

A point is occluded when other points project close to it (within ``radius``, normalised units)
and lie in front of it by more than a margin relative to the object's size. Visibility is a
weight, not something to optimise: it is computed without gradients, so points are never pushed
around to hide or show themselves.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def log_visibility(points: torch.Tensor, proj: torch.Tensor, radius: float) -> torch.Tensor:
    """``log v_n = -sum_m k(|pi_n - pi_m|) * sigmoid((z_n - z_m - d) / tau)`` (clamped at -20).

    Args:
        points: ``[I x H x N x 3]`` camera-frame points; proj: ``[I x H x N x 2]``.
        radius: Gaussian width of the image-plane neighbourhood (normalised units).
    Returns:
        ``[I x H x N]`` log-visibility, 0 for an unoccluded point.
    """
    centred = points - points.mean(-2, keepdim=True)
    size = centred.norm(dim=-1).mean(-1)[..., None, None]  # [I x H x 1 x 1]
    near = torch.exp(-torch.cdist(proj, proj) ** 2 / (2 * radius**2))
    z = points[..., 2]
    dz = z[..., :, None] - z[..., None, :]  # > 0: m is in front of n
    front = torch.sigmoid((dz - 0.1 * size) / (0.05 * size))
    return -(near * front).sum(-1).clamp_max(20.0)
