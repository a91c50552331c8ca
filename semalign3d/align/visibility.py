"""Which model points may explain image cells ([R], method.md §7: "only front-facing or
unoccluded model points explain a pixel").

* Soft self-occlusion: a point is occluded when other points project close to it (within
  ``radius``, normalised units) and lie in front of it by more than a margin relative to the
  object's size.
* Facing: a dense point remembers from which side the training cameras saw it
  (:attr:`ClassRepresentation.dense_facing`); seen from the other side it is a back face. This
  separates a pose from its "seen-through" twin even where the dense cloud is flat (a TV
  monitor's keypoints all lie on its front face, so its cloud is the front panel alone).

Both are weights, not something to optimise: they are computed without gradients, so points are
never pushed around to hide or show themselves.
"""

from __future__ import annotations

import torch

from semalign3d.geometry import similarity_fit


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


@torch.no_grad()
def facing_cosine(
    points: torch.Tensor,
    keypoints: torch.Tensor,
    canonical_keypoints: torch.Tensor,
    facing: torch.Tensor,
) -> torch.Tensor:
    """``<R m_n, -p_n / |p_n|>``: how far each point's canonical facing vector turns towards the
    camera in a pose.

    ``R`` is the rotation of the best similarity from the canonical keypoints onto the current
    ones, ``m_n`` the point's canonical facing vector and ``-p_n / |p_n|`` the direction from
    the point to the camera.

    Args:
        points: ``[... x N x 3]`` camera-frame points.
        keypoints: ``[... x K x 3]`` camera-frame keypoints; canonical_keypoints: ``[K x 3]``.
        facing: ``[N x 3]`` canonical facing vectors (length <= 1).
    Returns:
        ``[... x N]`` cosines scaled by ``|m_n|`` (in [-1, 1]).
    """
    src = canonical_keypoints.to(keypoints).expand_as(keypoints)
    _, rot, _ = similarity_fit(src, keypoints)  # [... x 3 x 3]
    m = facing.to(points) @ rot.transpose(-1, -2)  # [... x N x 3]
    to_cam = -points / points.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return (m * to_cam).sum(-1)


@torch.no_grad()
def log_facing(
    points: torch.Tensor,
    keypoints: torch.Tensor,
    canonical_keypoints: torch.Tensor,
    facing: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """``log f_n = max(-20, min(0, cos_n) / tau)`` with ``cos_n`` of :func:`facing_cosine`: a
    point seen from the side it was trained on costs nothing, a consistently one-sided point
    (``|m_n|`` near 1) seen from behind costs ``|m_n| / tau``.

    Args:
        points: ``[I x H x N x 3]`` camera-frame dense points.
        keypoints: ``[I x H x K x 3]`` camera-frame keypoints; canonical_keypoints: ``[K x 3]``.
        facing: ``[N x 3]`` canonical facing vectors (length <= 1).
        tau: penalty scale (cosine units).
    Returns:
        ``[I x H x N]`` log-weights in [-20, 0].
    """
    cos = facing_cosine(points, keypoints, canonical_keypoints, facing)
    return (cos.clamp_max(0) / tau).clamp_min(-20.0)
