"""Depth terms.

* ``L_depth`` (method.md §2.11e, form [C]): the projection and ``L_geom`` are invariant to
  scaling the cloud about the camera, so the mean keypoint depth is pinned to ``z_bar``:
  ``(mean_k z_k - z_bar)^2``.
* ``L_order`` ([R], method.md §7): at mirror-symmetric features a pose and its "seen through the
  object" twin project alike but have reversed depth order. One minus the weighted correlation of
  model depth with the image's pseudo-depth at the projections tells them apart.
"""

from __future__ import annotations

import torch

from semalign3d.align.background import sample_grid


def depth_gauge(keypoints: torch.Tensor, z_bar: torch.Tensor) -> torch.Tensor:
    """``[I x H x K x 3]`` keypoints, ``[I]`` targets -> ``[I x H]`` squared mean-depth error."""
    return (keypoints[..., 2].mean(-1) - z_bar[:, None]) ** 2


def depth_order_loss(
    points: torch.Tensor,
    proj: torch.Tensor,
    depth: torch.Tensor,
    weight_maps: torch.Tensor,
    offset: torch.Tensor,
    point_weight: torch.Tensor | None = None,
    form: str = "correlation",
) -> torch.Tensor:
    """``1 - corr(z_model, z_image)`` over points, weighted by the foreground at each projection
    (``form="correlation"``), or ``max(0, -corr)`` (``"hinge"``): a correlation is blind to the
    depth range, so a nearly flat cloud gains as much from a slight tilt as a deep one from its
    true pose; the hinge costs only a reversed order and leaves a right pose where it is.

    Args:
        points: ``[I x H x N x 3]`` camera-frame dense points; proj: ``[I x H x N x 2]``.
        depth: ``[I x 1 x h x w]`` pseudo-depth; weight_maps: ``[I x 1 x h x w]`` soft mask.
        offset: ``[I x 2]``.
        point_weight: optional ``[I x H x N]`` extra weights (e.g. visibility).
        form: ``"correlation"`` or ``"hinge"``.
    Returns:
        ``[I x H]`` in [0, 2] (``"hinge"``: [0, 1]).
    """
    if form not in ("correlation", "hinge"):
        raise ValueError(f"unknown depth_order_form {form!r}; expected 'correlation' or 'hinge'")
    d = sample_grid(depth, proj, offset)
    w = sample_grid(weight_maps, proj, offset)
    if point_weight is not None:
        w = w * point_weight
    wsum = w.sum(-1, keepdim=True).clamp_min(1e-12)
    z = points[..., 2]
    zc = z - (w * z).sum(-1, keepdim=True) / wsum
    dc = d - (w * d).sum(-1, keepdim=True) / wsum
    cov = (w * zc * dc).sum(-1)
    var = (w * zc**2).sum(-1) * (w * dc**2).sum(-1)
    corr = cov / (var + 1e-12).sqrt()
    return 1 - corr if form == "correlation" else (-corr).clamp_min(0)
