"""Generalised barycentric coordinates over all keypoint tetrahedra (method.md §2.10).

A point ``p`` is written, in every tetrahedron ``t`` of 4 keypoints that contains it, as
``p = sum_c b_tc v_tc``; the tetrahedra are blended with normalised inverse centroid distances.
The result is linear in the keypoints, so it collapses to one fixed ``[N x K]`` matrix ``M`` with
``p' = M @ keypoints'`` for every deformation. ``M`` is accumulated chunk by chunk: the
``N x T x 4`` tensor of the authors' code (12,650 tetrahedra at 25 keypoints) is never held.
"""

from __future__ import annotations

import torch

_REG = 1e-7
_EPS = 1e-6


def tetrahedra(k: int, device: torch.device | None = None) -> torch.Tensor:
    """All 4-subsets of ``k`` keypoints: ``[C(k, 4) x 4]`` long (sorted rows)."""
    if k < 4:
        return torch.zeros(0, 4, dtype=torch.long, device=device)
    return torch.combinations(torch.arange(k, device=device), 4)


def barycentric(points: torch.Tensor, verts: torch.Tensor) -> torch.Tensor:
    """Barycentric coordinates of points in tetrahedra.

    Args:
        points: ``[N x 3]``.
        verts: ``[T x 4 x 3]`` tetrahedron vertices.
    Returns:
        ``[N x T x 4]`` coordinates (sum to 1; ``1e-7 I`` regularises flat tetrahedra).
    """
    v0 = verts[:, 0]
    a = (verts[:, 1:] - v0[:, None]).transpose(1, 2)  # columns v1-v0, v2-v0, v3-v0
    a = a + _REG * torch.eye(3, dtype=a.dtype, device=a.device)
    ainv = torch.linalg.inv(a)  # [T x 3 x 3]
    b123 = torch.einsum("tij,ntj->nti", ainv, points[:, None] - v0[None])
    return torch.cat([1 - b123.sum(-1, keepdim=True), b123], -1)


def inside(b: torch.Tensor, tolerance: float = 0.1) -> torch.Tensor:
    """``[... x 4]`` coordinates -> ``[...]`` bool: ``b >= -tol`` and ``|sum b - 1| < tol``."""
    return (b >= -tolerance).all(-1) & ((b.sum(-1) - 1).abs() < tolerance)


def dense_from_sparse(
    points: torch.Tensor,
    skeleton: torch.Tensor,
    tets: torch.Tensor | None = None,
    tolerance: float = 0.1,
    max_elements: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[N x K]`` matrix expressing each point through the skeleton's tetrahedra.

    For the containing tetrahedra ``t`` of ``p`` (see :func:`inside`), with weights
    ``w_t ∝ 1 / (|p - centroid_t| + 1e-6)`` normalised to sum 1,
    ``M[p, k] = sum_t w_t sum_c b_tc [tets[t, c] == k]``, so ``M @ skeleton`` reproduces the
    points and ``M @ skeleton'`` transfers them to a deformed skeleton ``skeleton'``.

    Args:
        points: ``[N x 3]``.
        skeleton: ``[K x 3]`` keypoints (no NaN).
        tets: ``[T x 4]`` long tetrahedra (default: all 4-subsets of ``K``).
        tolerance: inside-test tolerance.
        max_elements: bound on ``n_points x n_tets`` per chunk (memory knob).
    Returns:
        ``(M [N x K], inside [N] bool)``; rows of points in no tetrahedron are 0.
    """
    k = skeleton.shape[0]
    tets = tetrahedra(k, skeleton.device) if tets is None else tets.to(skeleton.device)
    dt = torch.float64  # inverse-distance weights and near-flat tetrahedra need the range
    pts, sk = points.to(dt), skeleton.to(dt)
    n = pts.shape[0]
    m = torch.zeros(n, k, dtype=dt, device=pts.device)
    wsum = torch.zeros(n, dtype=dt, device=pts.device)
    if tets.shape[0] == 0 or n == 0:
        return m.to(points.dtype), wsum > 0
    t_chunk = min(tets.shape[0], max(1, max_elements // 64))
    p_chunk = max(1, max_elements // t_chunk)
    for ts in range(0, tets.shape[0], t_chunk):
        tt = tets[ts : ts + t_chunk]
        verts = sk[tt]  # [t x 4 x 3]
        cent = verts.mean(1)
        flat_index = tt.reshape(-1)
        for ps in range(0, n, p_chunk):
            p = pts[ps : ps + p_chunk]
            b = barycentric(p, verts)  # [n x t x 4]
            w = inside(b, tolerance) / (torch.cdist(p, cent) + _EPS)  # [n x t]
            contrib = (w[..., None] * b).reshape(p.shape[0], -1)
            m[ps : ps + p_chunk].index_add_(1, flat_index, contrib)
            wsum[ps : ps + p_chunk] += w.sum(-1)
    ok = wsum > 0
    m = torch.where(ok[:, None], m / wsum.clamp_min(1e-300)[:, None], torch.zeros_like(m))
    return m.to(points.dtype), ok
