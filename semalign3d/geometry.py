"""Camera conventions shared by every stage (method.md §2.0).

Normalised image coordinates: a pixel ``(x, y)`` of an ``H x W`` image maps to
``u = (x, y) / max(H, W)``. The camera sits at the origin looking along +z with intrinsics
``K_f = [[f, 0, px], [0, f, py], [0, 0, 1]]``,
``px = W / (2 max(H, W))``, ``py = H / (2 max(H, W))``.
All functions are pure, batch-first, and device/dtype agnostic.
"""

from __future__ import annotations

import torch


def principal_point(height: int, width: int) -> tuple[float, float]:
    """``(px, py)`` in normalised units."""
    s = float(max(height, width))
    return width / (2 * s), height / (2 * s)


def to_normalized(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixels ``[... x 2]`` -> normalised coordinates ``[... x 2]``."""
    return xy / float(max(height, width))


def to_pixels(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised coordinates ``[... x 2]`` -> pixels ``[... x 2]``."""
    return uv * float(max(height, width))


def project(points: torch.Tensor, focal: torch.Tensor, principal: torch.Tensor) -> torch.Tensor:
    """Pinhole projection ``pi_f``.

    Args:
        points: ``[B x N x 3]`` camera-frame points (z > 0).
        focal: ``[B]`` focal length f (normalised units).
        principal: ``[B x 2]`` principal point (normalised units).
    Returns:
        ``[B x N x 2]`` normalised image coordinates.
    """
    z = points[..., 2:3]
    return focal[:, None, None] * points[..., :2] / z + principal[:, None, :]


def backproject(
    uv: torch.Tensor, depth: torch.Tensor, focal: torch.Tensor, principal: torch.Tensor
) -> torch.Tensor:
    """Inverse of :func:`project` at known depth.

    Args:
        uv: ``[B x N x 2]`` normalised coordinates.
        depth: ``[B x N]`` z values.
        focal: ``[B]``; principal: ``[B x 2]``.
    Returns:
        ``[B x N x 3]`` camera-frame points.
    """
    z = depth[..., None]
    xy = (uv - principal[:, None, :]) * z / focal[:, None, None]
    return torch.cat([xy, z], dim=-1)


def procrustes_align(
    source: torch.Tensor, target: torch.Tensor, allow_reflection: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity (scale, rotation, translation) that best maps ``source`` onto ``target``.

    Args:
        source, target: ``[N x 3]`` corresponding points (rows with NaN are ignored).
        allow_reflection: also allow an improper rotation (det = -1).
    Returns:
        ``(aligned [N x 3], rms)`` where ``rms`` is the root-mean-square residual.
    """
    ok = ~(torch.isnan(source).any(-1) | torch.isnan(target).any(-1))
    s, t = source[ok], target[ok]
    ms, mt = s.mean(0), t.mean(0)
    s0, t0 = s - ms, t - mt
    u, sig, vh = torch.linalg.svd(t0.T @ s0)
    d = torch.ones(3, dtype=s.dtype, device=s.device)
    if not allow_reflection and torch.det(u @ vh) < 0:
        d[-1] = -1
    r = u @ torch.diag(d) @ vh
    scale = (sig * d).sum() / (s0**2).sum().clamp_min(1e-12)
    aligned = scale * (source - ms) @ r.T + mt
    rms = ((aligned[ok] - t) ** 2).sum(-1).mean().sqrt()
    return aligned, rms
