"""``L_background``: dense points projected onto background cells are penalised
(method.md §2.11d, [R] form) by the blurred test mask, sampled bilinearly so gradients flow."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_grid(maps: torch.Tensor, proj: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Bilinear read of per-image maps over the padded square at projected points.

    Args:
        maps: ``[I x 1 x h x w]`` maps covering the centred square of side ``max(H, W)``.
        proj: ``[I x H x M x 2]`` normalised image coordinates.
        offset: ``[I x 2]`` padding / side of each image.
    Returns:
        ``[I x H x M]``; points outside the square read 0.
    """
    g = 2 * (proj + offset[:, None, None, :]) - 1
    return F.grid_sample(maps, g.to(maps.dtype), align_corners=False, padding_mode="zeros")[:, 0]


def background_loss(proj: torch.Tensor, mask: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Mean background-ness ``1 - M(pi(p_n))`` over dense points.

    Args:
        proj: ``[I x H x N x 2]`` projected dense points; mask: ``[I x 1 x h x w]`` soft mask;
        offset: ``[I x 2]``.
    Returns:
        ``[I x H]`` in [0, 1].
    """
    return (1 - sample_grid(mask, proj, offset)).mean(-1)
