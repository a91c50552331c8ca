"""From one image's 2D annotations to 3D points (method.md §2.3, §2.4).

Disparity becomes the code's affine pseudo-depth ``z = 1 - span * d / max d``; keypoints are
snapped into the eroded object mask so that boundary keypoints do not read background depth;
keypoints and mask pixels are back-projected with the image's focal length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semalign3d.geometry import backproject, principal_point, to_normalized


class LiftingError(ValueError):
    """An image's depth or mask cannot be lifted to 3D. The message names the image."""


def pseudo_depth(disparity: torch.Tensor, span: float = 0.3, name: str = "image") -> torch.Tensor:
    """``z = 1 - span * d / max(d)`` (method.md §2.3, [C]).

    Args:
        disparity: ``[H x W]`` relative inverse depth (larger = nearer).
        span: depth range; ``z`` lies in ``[1 - span, 1]`` for non-negative disparity.
        name: image name used in errors.
    Returns:
        ``[H x W]`` pseudo-depth.
    Raises:
        LiftingError: NaN/Inf disparity, a non-positive maximum, or a constant map (which would
            make every back-projected point coplanar).
    """
    if not torch.isfinite(disparity).all():
        raise LiftingError(f"{name}: disparity map contains NaN or Inf")
    dmax = disparity.max()
    if dmax <= 0:
        raise LiftingError(f"{name}: disparity maximum is {float(dmax):.3g}, expected > 0")
    if disparity.min() == dmax:
        raise LiftingError(f"{name}: disparity map is constant, the depth carries no shape")
    return 1 - span * disparity / dmax


def erode(mask: torch.Tensor, iterations: int = 2) -> torch.Tensor:
    """Binary erosion with a 2x2 kernel (OpenCV anchor ``(1, 1)``, border does not erode).

    Args:
        mask: ``[H x W]`` bool.
        iterations: number of erosions.
    Returns:
        ``[H x W]`` bool.
    """
    # erosion of the mask is dilation (max-pool) of its complement
    inv = (~mask).to(torch.float32)[None, None]
    for _ in range(iterations):
        inv = F.max_pool2d(F.pad(inv, (1, 0, 1, 0), value=0.0), kernel_size=2, stride=1)
    return inv[0, 0] < 0.5


def snap_to_mask(
    xy: torch.Tensor, mask: torch.Tensor, iterations: int = 2, name: str = "image"
) -> torch.Tensor:
    """Move every keypoint to the nearest pixel of the eroded mask (method.md §2.4).

    Falls back to the un-eroded mask when erosion leaves nothing (thin objects).

    Args:
        xy: ``[K x 2]`` pixel coordinates (NaN rows stay NaN).
        mask: ``[H x W]`` bool object mask.
        iterations: erosion iterations.
        name: image name used in errors.
    Returns:
        ``[K x 2]`` pixel coordinates of mask pixels (integer-valued).
    """
    if not bool(mask.any()):
        raise LiftingError(f"{name}: object mask is empty")
    er = erode(mask, iterations)
    if not bool(er.any()):
        er = mask
    yy, xx = torch.nonzero(er, as_tuple=True)
    pix = torch.stack([xx, yy], -1).to(xy.dtype)  # [M x 2]
    ok = ~torch.isnan(xy).any(-1)
    out = torch.full_like(xy, float("nan"))
    if ok.any():
        nearest = torch.cdist(xy[ok], pix).argmin(-1)
        out[ok] = pix[nearest]
    return out


def read_depth(depth: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel depth ``[K]`` at pixels ``[K x 2]`` (NaN where ``xy`` is NaN)."""
    h, w = depth.shape
    ok = ~torch.isnan(xy).any(-1)
    xi = torch.nan_to_num(xy[:, 0]).round().long().clamp(0, w - 1)
    yi = torch.nan_to_num(xy[:, 1]).round().long().clamp(0, h - 1)
    z = depth[yi, xi]
    return torch.where(ok, z, torch.full_like(z, float("nan")))


def lift_pixels(
    xy: torch.Tensor, z: torch.Tensor, focal: float | torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Back-project pixels of one image.

    Args:
        xy: ``[N x 2]`` pixel coordinates; z: ``[N]`` depth; focal: f in normalised units.
    Returns:
        ``[N x 3]`` camera-frame points (NaN rows stay NaN).
    """
    uv = to_normalized(xy, height, width)
    pp = torch.tensor(principal_point(height, width), dtype=xy.dtype, device=xy.device)
    f = torch.as_tensor(focal, dtype=xy.dtype, device=xy.device).reshape(1)
    return backproject(uv[None], z[None], f, pp[None])[0]


def mask_pixels(
    mask: torch.Tensor, max_points: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pixel coordinates ``[M x 2]`` (x, y) of at most ``max_points`` random mask pixels."""
    yy, xx = torch.nonzero(mask, as_tuple=True)
    pix = torch.stack([xx, yy], -1).to(torch.float32)
    if pix.shape[0] > max_points:
        keep = torch.randperm(pix.shape[0], generator=generator)[:max_points]
        pix = pix[keep.sort().values]
    return pix
