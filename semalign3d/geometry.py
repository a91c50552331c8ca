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


def similarity_fit(
    source: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    allow_reflection: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity ``target ~ scale * source @ R.T + t`` (Umeyama), batched.

    Args:
        source, target: ``[... x N x 3]`` corresponding points (rows with NaN or Inf get
            weight 0).
        weight: optional ``[... x N]`` non-negative point weights.
        allow_reflection: also allow an improper ``R`` (det = -1).
    Returns:
        ``(scale [...], R [... x 3 x 3], t [... x 3])``.
    """
    bad = ~(torch.isfinite(source).all(-1) & torch.isfinite(target).all(-1))
    w = torch.ones_like(source[..., 0]) if weight is None else weight.to(source.dtype)
    w = torch.where(bad, torch.zeros_like(w), w)
    s = torch.where(bad[..., None], torch.zeros_like(source), source)
    t = torch.where(bad[..., None], torch.zeros_like(target), target)
    wn = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    ms = (wn[..., None] * s).sum(-2)
    mt = (wn[..., None] * t).sum(-2)
    s0, t0 = s - ms[..., None, :], t - mt[..., None, :]
    cov = (t0 * wn[..., None]).transpose(-1, -2) @ s0  # [... x 3 x 3]
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    if not allow_reflection:
        d[..., -1] = torch.where(torch.det(u @ vh) < 0, -1.0, 1.0).to(d)
    r = u @ (d[..., :, None] * vh)
    scale = (sig * d).sum(-1) / (wn * (s0**2).sum(-1)).sum(-1).clamp_min(1e-12)
    shift = mt - scale[..., None] * (ms[..., None, :] @ r.transpose(-1, -2))[..., 0, :]
    return scale, r, shift


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
    scale, r, shift = similarity_fit(source, target, allow_reflection=allow_reflection)
    aligned = scale * source @ r.T + shift
    rms = ((aligned[ok] - target[ok]) ** 2).sum(-1).mean().sqrt()
    return aligned, rms
