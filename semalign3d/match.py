"""Keypoint transfer between two images.

* :func:`nn_match`: the nearest-neighbour baseline (cosine similarity of descriptors), the
  "DINO+SD / GeoAware" row of the paper's Table 1 once real encoders are used.
* :func:`readout`: the shared read-out of a score map to pixels (argmax, with optional window
  soft-argmax refinement as in GeoAware-SC), used by every matcher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
