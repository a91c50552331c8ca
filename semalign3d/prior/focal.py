"""Per-image focal lengths by geometric consistency across images (method.md §2.5).

With pseudo-depth fixed, the focal length is the only free parameter of each back-projection.
The right focal lengths make the shapes of all images similar to one another, so the fit
minimises, over all images at once, the across-image variance of the similarity-invariant
shared-vertex quantities ``cos A_ijk`` and ``R_ijk`` (code's ``focal_length_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_EPS = 1e-6


def triple_index(k: int, device: torch.device | None = None) -> torch.Tensor:
    """Shared-vertex triples ``(i, j, k)`` with ``j < k`` and ``i`` not in ``{j, k}``:
    ``[k C(k - 1, 2) x 3]`` long. (``(i, k, j)`` carries the same angle and the
    complementary ratio, so it adds nothing to the variance.)"""
    pairs = torch.combinations(torch.arange(k, device=device), 2)
    if pairs.shape[0] == 0:
        return torch.zeros(0, 3, dtype=torch.long, device=device)
    apex = torch.arange(k, device=device)
    tri = torch.cat(
        [apex[:, None, None].expand(k, pairs.shape[0], 1), pairs[None].expand(k, -1, -1)], -1
    ).reshape(-1, 3)
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 0] != tri[:, 2])
    return tri[keep]


def triple_features(points: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos A_ijk`` and ``R_ijk`` of ``points [B x K x 3]`` for triples ``[T x 3]`` ->
    ``([B x T], [B x T])``."""
    e1 = points[:, index[:, 1]] - points[:, index[:, 0]]
    e2 = points[:, index[:, 2]] - points[:, index[:, 0]]
    n1, n2 = e1.norm(dim=-1), e2.norm(dim=-1)
    cos = (e1 * e2).sum(-1) / (n1 * n2 + _EPS)
    ratio = n1 / (n1 + n2 + _EPS)
    return cos, ratio


def masked_variance(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Variance over dim 0 with denominator ``n - 1`` over valid rows: ``[B x T]`` -> ``[T]``
    (0 where fewer than 2 rows are valid)."""
    w = valid.to(x.dtype)
    n = w.sum(0)
    xv = torch.where(valid, x, torch.zeros_like(x))
    mean = xv.sum(0) / n.clamp_min(1)
    var = (w * (xv - mean) ** 2).sum(0) / (n - 1).clamp_min(1)
    return torch.where(n >= 2, var, torch.zeros_like(var))


def lift_normalized(
    uv: torch.Tensor, z: torch.Tensor, principal: torch.Tensor, focal_inv: torch.Tensor
) -> torch.Tensor:
    """Back-projection with inverse focal lengths: ``[B x K x 2]``, ``[B x K]``, ``[B x 2]``,
    ``[B]`` -> ``[B x K x 3]``."""
    xy = (uv - principal[:, None]) * z[..., None] * focal_inv.abs()[:, None, None]
    return torch.cat([xy, z[..., None]], -1)


@dataclass(frozen=True)
class TripleTerms:
    """Focal-independent coefficients of the triple features, ``[B x T]`` each.

    With ``s = (1/f)^2`` per image, edge ``e1 = X_j - X_i`` has ``|e1|^2 = s P1 + Q1`` (image-plane
    and depth parts), likewise ``e2``, and ``<e1, e2> = s Pd + Qd``; so each optimisation step is a
    handful of element-wise operations instead of a back-projection and gathers.
    """

    p1: torch.Tensor
    q1: torch.Tensor
    p2: torch.Tensor
    q2: torch.Tensor
    pd: torch.Tensor
    qd: torch.Tensor
    valid: torch.Tensor


def triple_terms(
    uv: torch.Tensor,
    z: torch.Tensor,
    principal: torch.Tensor,
    visible: torch.Tensor,
    index: torch.Tensor,
) -> TripleTerms:
    """Precompute :class:`TripleTerms` from ``uv [B x K x 2]``, ``z [B x K]``,
    ``principal [B x 2]``, ``visible [B x K]`` and triples ``index [T x 3]``."""
    a = ((uv - principal[:, None]) * z[..., None]).nan_to_num()  # X_xy = a / f
    zz = z.nan_to_num()
    i, j, k = index[:, 0], index[:, 1], index[:, 2]
    d1, d2 = a[:, j] - a[:, i], a[:, k] - a[:, i]
    z1, z2 = zz[:, j] - zz[:, i], zz[:, k] - zz[:, i]
    return TripleTerms(
        (d1 * d1).sum(-1),
        z1 * z1,
        (d2 * d2).sum(-1),
        z2 * z2,
        (d1 * d2).sum(-1),
        z1 * z2,
        visible[:, index].all(-1),
    )


def focal_loss(terms: TripleTerms, focal_inv: torch.Tensor) -> torch.Tensor:
    """Sum over triples of ``Var_s[cos A] + Var_s[R]`` (scalar) for inverse focals ``[B]``."""
    s = focal_inv.square()[:, None]
    # the clamp keeps sqrt's gradient finite on zero-length (e.g. masked) edges
    n1 = (s * terms.p1 + terms.q1).clamp_min(1e-30).sqrt()
    n2 = (s * terms.p2 + terms.q2).clamp_min(1e-30).sqrt()
    cos = (s * terms.pd + terms.qd) / (n1 * n2 + _EPS)
    ratio = n1 / (n1 + n2 + _EPS)
    return masked_variance(cos, terms.valid).sum() + masked_variance(ratio, terms.valid).sum()


def fit_focal(
    uv: torch.Tensor,
    z: torch.Tensor,
    principal: torch.Tensor,
    visible: torch.Tensor,
    init_inv: float = 0.2,
    lr: float = 1e-3,
    steps: int = 1000,
    flip_pairs: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Fit every image's inverse focal length jointly (AdamW, method.md §2.5).

    Args:
        uv: ``[B x K x 2]`` normalised keypoint coordinates (NaN where invisible).
        z: ``[B x K]`` keypoint pseudo-depth.
        principal: ``[B x 2]`` principal points.
        visible: ``[B x K]`` bool.
        init_inv: initial ``1/f`` of every image.
        lr, steps: AdamW settings.
        flip_pairs: ``[P x 2]`` long: rows ``(s, t)`` of an image and its mirror, whose fitted
            ``1/f`` are averaged afterwards ([C]).
        progress: show a tqdm bar.
    Returns:
        ``(focal [B], info)``: focal lengths ``f = 1 / |f^-1|`` and the initial/final loss.
    """
    dt = torch.float64 if uv.dtype == torch.float64 else torch.float32
    index = triple_index(uv.shape[1], uv.device)
    focal_inv = torch.full((uv.shape[0],), init_inv, dtype=dt, device=uv.device)
    focal_inv.requires_grad_(True)
    opt = torch.optim.AdamW([focal_inv], lr=lr)
    terms = triple_terms(uv.to(dt), z.to(dt), principal.to(dt), visible, index)
    first = last = float("nan")
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="focal", leave=False)
    for step in it:
        opt.zero_grad()
        loss = focal_loss(terms, focal_inv)
        loss.backward()
        opt.step()
        if step == 0:
            first = float(loss.detach())
        last = float(loss.detach())
    inv = focal_inv.detach().abs()
    if flip_pairs is not None and flip_pairs.numel():
        mean = (inv[flip_pairs[:, 0]] + inv[flip_pairs[:, 1]]) / 2
        inv = inv.clone()
        inv[flip_pairs[:, 0]] = mean
        inv[flip_pairs[:, 1]] = mean
    return 1 / inv.clamp_min(1e-6), {"loss_initial": first, "loss_final": last}
