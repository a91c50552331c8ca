"""Weak-perspective placement of a rotated canonical cloud in front of an object
([R], method.md §2.11h: initial scale and translation).

A start is described in the image plane: a cloud rotated by ``R`` projects orthographically to
``p = (R x)_xy``, and the start puts ``p`` at ``a p + b`` (normalised coordinates). At the gauge
depth ``z`` with focal ``f0`` that image is, to first order in the object's depth extent, the
pinhole projection of the camera-frame points ``s R x + (t_xy, z)`` with ``s = a z / f0`` and
``t_xy = (b - principal) z / f0``.
"""

from __future__ import annotations

import torch

from semalign3d.align.target import TargetBatch


def box_fit(dense: torch.Tensor, batch: TargetBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The similarity without rotation that makes each rotated dense cloud span each image's
    object box, centred on it.

    Args:
        dense: ``[J x N x 3]`` rotated, centred dense clouds.
        batch: the images (``extent``, ``center``).
    Returns:
        ``(a [I x J], b [I x J x 2])``.
    """
    lo, hi = dense[..., :2].amin(-2), dense[..., :2].amax(-2)
    span = (hi - lo).amax(-1).clamp_min(1e-9)
    a = batch.extent[:, None] / span[None]
    b = batch.center[:, None] - a[..., None] * ((lo + hi) / 2)[None]
    return a, b


def place(
    keypoints: torch.Tensor,
    rotations: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    batch: TargetBatch,
    focal: float,
) -> torch.Tensor:
    """Camera-frame keypoints of a start given in the image plane (see the module docstring).

    Args:
        keypoints: ``[K x 3]`` canonical keypoints, centred.
        rotations: ``[I x J x 3 x 3]`` (or broadcastable) rotation of every start.
        scale: ``[I x J]``; shift: ``[I x J x 2]``: the image-plane similarity ``a p + b``.
        batch: the images (``z_bar``, ``principal``).
        focal: the focal length the start assumes (normalised units).
    Returns:
        ``[I x J x K x 3]`` at mean depth ``batch.z_bar``.
    """
    z = batch.z_bar[:, None]  # [I x 1]
    s = scale * z / focal
    txy = (shift - batch.principal[:, None]) * z[..., None] / focal
    t = torch.cat([txy, z[..., None].expand_as(s[..., None])], -1)
    return s[..., None, None] * keypoints @ rotations.transpose(-1, -2) + t[:, :, None]
