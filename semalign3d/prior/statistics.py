"""Beta statistics of the keypoint relations over the training images (method.md §2.6).

Every image's 3D keypoints are copied with isotropic noise (std ``noise_rate`` x the image's
shortest visible edge), every relation's features are computed for every copy, and one Beta
distribution per feature is fitted to all relations at once (chunked over relations so memory
stays bounded at ~94k edge pairs and ~110k tet relations for 30 keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semalign3d.prior.beta import beta_mode, fit_beta
from semalign3d.prior.relations import (
    edge_pair_features,
    edge_pair_index,
    tet_features,
    tet_index,
)
from semalign3d.prior.shape_prior import ShapePrior


@dataclass(frozen=True)
class PriorCounts:
    """How many relations were fitted and kept."""

    edges_total: int
    edges_kept: int
    tets_total: int
    tets_kept: int


def shortest_edge(points: torch.Tensor) -> torch.Tensor:
    """Shortest distance between two visible keypoints per image: ``[B x K x 3]`` -> ``[B]``
    (NaN rows are invisible; ``inf`` if fewer than 2 are visible)."""
    d = torch.cdist(points.nan_to_num(), points.nan_to_num())
    vis = ~torch.isnan(points).any(-1)
    pair = vis[:, :, None] & vis[:, None, :]
    pair &= ~torch.eye(points.shape[1], dtype=torch.bool, device=points.device)
    return torch.where(pair, d, torch.full_like(d, float("inf"))).flatten(1).min(-1).values


def noisy_copies(
    points: torch.Tensor, copies: int, noise_rate: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``copies`` noisy versions of every image's keypoints: ``[B x K x 3]`` ->
    ``[B * copies x K x 3]`` (image-major; NaN stays NaN)."""
    std = noise_rate * shortest_edge(points)
    std = torch.where(torch.isfinite(std), std, torch.zeros_like(std))
    noise = torch.randn(
        (points.shape[0], copies, *points.shape[1:]), generator=generator, dtype=points.dtype
    ).to(points.device)
    return (points[:, None] + std[:, None, None, None] * noise).flatten(0, 1)


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def fit_relations(
    samples: torch.Tensor,
    use_tets: bool = True,
    eps: float = 1e-3,
    newton_steps: int = 20,
    min_samples: int = 40,
    chunk: int = 8192,
) -> tuple[ShapePrior, PriorCounts]:
    """Fit and filter the Beta prior of all relations of ``samples``.

    Args:
        samples: ``[S x K x 3]`` keypoint samples, NaN where invisible; ``K`` used keypoints.
        use_tets: also fit the triangle+apex relations.
        eps, newton_steps: :func:`fit_beta` settings.
        min_samples: a relation needs at least this many samples with all its keypoints.
        chunk: relations fitted per batch.
    Returns:
        ``(prior, counts)`` with only the valid relations (method.md §2.6 filter: enough samples,
        Beta mode of the ratio in [0.01, 0.99], every ``a, b > 1``).
    """
    k = samples.shape[1]
    vis = ~torch.isnan(samples).any(-1)
    eidx = edge_pair_index(k).to(samples.device)
    e_keep, e_cos, e_rat = [], [], []
    for sl in _chunks(eidx.shape[0], chunk):
        idx = eidx[sl]
        cos, ratio = edge_pair_features(samples, idx)
        ok = vis[:, idx].all(-1)
        ac, bc, n = fit_beta((cos + 1) / 2, ok, eps, newton_steps, min_samples)
        ar, br, _ = fit_beta(ratio, ok, eps, newton_steps, min_samples)
        mode = beta_mode(ar, br)
        keep = (n >= min_samples) & (mode >= 0.01) & (mode <= 0.99)
        keep &= (ac > 1) & (bc > 1) & (ar > 1) & (br > 1)
        e_keep.append(keep)
        e_cos.append(torch.stack([ac, bc], -1))
        e_rat.append(torch.stack([ar, br], -1))
    dt = samples.dtype
    if e_keep:
        ek = torch.cat(e_keep)
        edge_index, edge_cos, edge_rat = eidx[ek], torch.cat(e_cos)[ek], torch.cat(e_rat)[ek]
    else:
        edge_index = eidx
        edge_cos = edge_rat = samples.new_zeros(0, 2)
    tidx = tet_index(k).to(samples.device) if use_tets else eidx.new_zeros(0, 4)
    t_keep, t_ab = [], []
    for sl in _chunks(tidx.shape[0], chunk):
        idx = tidx[sl]
        feats = (tet_features(samples, idx) + 1) / 2  # [S x T x 3]
        ok = vis[:, idx].all(-1)
        s, t = feats.shape[:2]
        okx = ok[..., None].expand(s, t, 3).reshape(s, -1)
        a, b, n = fit_beta(feats.reshape(s, -1), okx, eps, newton_steps, min_samples)
        a, b, n = a.reshape(t, 3), b.reshape(t, 3), n.reshape(t, 3)[:, 0]
        t_keep.append((n >= min_samples) & (a > 1).all(-1) & (b > 1).all(-1))
        t_ab.append(torch.stack([a, b], -1))
    if t_keep:
        tk = torch.cat(t_keep)
        tet_idx, tet_ab = tidx[tk], torch.cat(t_ab)[tk]
    else:
        tet_idx, tet_ab = tidx, samples.new_zeros(0, 3, 2)
    prior = ShapePrior(edge_index, edge_cos.to(dt), edge_rat.to(dt), tet_idx, tet_ab.to(dt))
    counts = PriorCounts(int(eidx.shape[0]), prior.num_edges, int(tidx.shape[0]), prior.num_tets)
    return prior, counts


def used_keypoints(points: torch.Tensor) -> torch.Tensor:
    """Keypoint ids visible in at least one image: ``[B x K x 3]`` -> ``[K']`` long."""
    return torch.nonzero((~torch.isnan(points).any(-1)).any(0)).flatten()
