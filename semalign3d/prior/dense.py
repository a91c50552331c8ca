"""Descriptors of the sparse keypoints and the dense feature cloud (method.md §2.8, §2.9).

Every training image's mask points are carried into the canonical frame through its keypoint
skeleton (generalised barycentric transfer, :mod:`semalign3d.prior.barycentric`), merged,
clustered with k-means, and every centre gets the mean descriptor of its nearest merged points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semalign3d.prior.barycentric import dense_from_sparse, tetrahedra
from semalign3d.prior.kmeans import kmeans


@dataclass(frozen=True)
class DenseCloud:
    """Dense points of the canonical frame (``N`` centres incl. anchors, ``C`` channels).

    Attributes:
        xyz: ``[N x 3]``; features: ``[N x C]`` unit; sim_mean, sim_std, weight: ``[N]``;
        dense_from_sparse: ``[N x K]`` with ``xyz = dense_from_sparse @ sparse``;
        facing: ``[N x 3]`` mean unit direction towards the cameras that saw the point (its
            length, in [0, 1], is how consistently the point was seen from one side).
    """

    xyz: torch.Tensor
    features: torch.Tensor
    sim_mean: torch.Tensor
    sim_std: torch.Tensor
    weight: torch.Tensor
    dense_from_sparse: torch.Tensor
    facing: torch.Tensor


def transfer_points(
    points: torch.Tensor, source: torch.Tensor, target: torch.Tensor, tolerance: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry points from one keypoint skeleton to another through all tetrahedra of the
    keypoints visible in ``source``.

    Args:
        points: ``[N x 3]`` in the source frame.
        source: ``[K x 3]`` source keypoints (NaN rows invisible).
        target: ``[K x 3]`` target keypoints.
        tolerance: barycentric inside-test tolerance.
    Returns:
        ``(moved [N x 3], inside [N] bool)``; points inside no tetrahedron map to 0.
    """
    vis = ~torch.isnan(source).any(-1)
    if int(vis.sum()) < 4:
        return points.new_zeros(points.shape), torch.zeros_like(points[:, 0], dtype=torch.bool)
    m, ok = dense_from_sparse(points, source[vis], tetrahedra(int(vis.sum())), tolerance)
    return m @ target[vis].to(m.dtype), ok


def transfer_sample(
    points: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    max_inside: int,
    tolerance: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``max_inside`` random points that land inside the source skeleton's hull, carried
    to the target skeleton.

    Equivalent to transferring all points and subsampling the inside ones, but the points are
    visited in random order in blocks of ``2 max_inside`` and the work stops once enough are
    inside (the transfer costs ``points x tetrahedra``).

    Args:
        points: ``[N x 3]``; source, target: ``[K x 3]`` (NaN rows of source are invisible).
    Returns:
        ``(moved [M x 3], index [M] long into points)`` with ``M <= max_inside``.
    """
    order = torch.randperm(points.shape[0], generator=generator)
    block = max(1, 2 * max_inside)
    moved, index, found = [], [], 0
    for s in range(0, order.shape[0], block):
        idx = order[s : s + block]
        m, ok = transfer_points(points[idx], source, target, tolerance)
        moved.append(m[ok])
        index.append(idx[ok])
        found += int(ok.sum())
        if found >= max_inside:
            break
    if not moved:
        return points.new_zeros(0, 3), torch.zeros(0, dtype=torch.long)
    return torch.cat(moved)[:max_inside], torch.cat(index)[:max_inside]


def keypoint_features(
    features: torch.Tensor, visible: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``phi_k = norm(mean_s F_s(u_k))`` and the mean/std over images of ``<F_s(u_k), phi_k>``.

    Args:
        features: ``[B x K x C]`` unit descriptors at the keypoints (any value where invisible).
        visible: ``[B x K]`` bool.
    Returns:
        ``(phi [K x C], sim_mean [K], sim_std [K])``; std is 0 for a keypoint seen once.
    """
    w = visible.to(features.dtype)
    f = torch.where(visible[..., None], features, torch.zeros_like(features))
    phi = F.normalize(f.sum(0), dim=-1)
    sim = torch.einsum("bkc,kc->bk", f, phi)
    n = w.sum(0)
    mean = (sim * w).sum(0) / n.clamp_min(1)
    var = (w * (sim - mean) ** 2).sum(0) / (n - 1).clamp_min(1)
    return phi, mean, var.sqrt()


def neighbour_features(
    centres: torch.Tensor,
    points: torch.Tensor,
    features: torch.Tensor,
    neighbours: int,
    directions: torch.Tensor | None = None,
    max_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per centre: normalised mean descriptor of its nearest merged points, the mean/std of
    their similarity to it, and the mean of their viewing directions.

    Args:
        centres: ``[N x D]``; points: ``[P x D]`` (positions, with the side coordinates of
            :func:`build_dense` when it clusters them); features: ``[P x C]`` unit;
        neighbours: points averaged per centre (clipped to ``P``);
        directions: optional ``[P x 3]`` unit directions from each point to its camera.
    Returns:
        ``(psi [N x C], sim_mean [N], sim_std [N], facing [N x 3])``; ``facing`` is 0 without
        ``directions``.
    """
    nn = min(neighbours, points.shape[0])
    c = features.shape[1]
    chunk = max(1, max_elements // max(1, nn * c))
    psi, mean, std, facing = [], [], [], []
    for s in range(0, centres.shape[0], chunk):
        d = torch.cdist(centres[s : s + chunk], points)
        near = d.topk(nn, dim=-1, largest=False).indices  # [n x nn]
        f = features[near]  # [n x nn x C]
        p = F.normalize(f.mean(1), dim=-1)
        sim = torch.einsum("nmc,nc->nm", f, p)
        psi.append(p)
        mean.append(sim.mean(-1))
        std.append(sim.std(-1) if nn > 1 else torch.zeros_like(sim[:, 0]))
        facing.append(directions[near].mean(1) if directions is not None
                      else centres.new_zeros(near.shape[0], 3))
    return torch.cat(psi), torch.cat(mean), torch.cat(std), torch.cat(facing)


def build_dense(
    points: torch.Tensor,
    features: torch.Tensor,
    sparse: torch.Tensor,
    n_clusters: int = 1000,
    kmeans_iters: int = 30,
    feature_neighbors: int = 1000,
    density_threshold: float = 0.0005,
    tolerance: float = 0.1,
    seed: int = 0,
    directions: torch.Tensor | None = None,
    facing_weight: float = 0.0,
) -> DenseCloud:
    """Cluster the merged canonical points into the dense cloud (method.md §2.9 steps 2-5).

    Args:
        points: ``[P x 3]`` merged canonical points of all images (may be empty).
        features: ``[P x C]`` their unit descriptors.
        directions: optional ``[P x 3]`` unit canonical directions towards each point's camera
            (averaged into :attr:`DenseCloud.facing`; 0 without).
        sparse: ``[K x 3]`` canonical keypoints, appended as anchors (weight 1).
        n_clusters, kmeans_iters, seed: k-means settings.
        feature_neighbors: merged points averaged into each centre's feature.
        density_threshold: centres holding at most this fraction of the points are dropped.
        tolerance: inside-hull tolerance; centres outside the keypoint hull are dropped.
        facing_weight: ``[R]`` > 0: k-means and the feature neighbours also separate points
            seen from opposite sides: each point is clustered as ``(xyz, w r d)`` with ``d`` its
            viewing direction and ``r`` the keypoints' RMS radius. Where the keypoints are
            coplanar (bottle) the barycentric transfer flattens the object onto their plane and
            its front and back surfaces fall on the same places; this keeps them apart, each
            with its own descriptor and facing vector (0: the authors' position-only k-means).
    Returns:
        the :class:`DenseCloud` (descriptors in ``features.dtype``, geometry in ``sparse.dtype``).
    Raises:
        ValueError: ``points`` is empty.
    """
    k = sparse.shape[0]
    dt = sparse.dtype
    if points.shape[0] == 0:
        raise ValueError("no dense points survived the transfer to the canonical frame")
    if facing_weight < 0:
        raise ValueError(f"facing_weight must be >= 0, got {facing_weight}")
    side = None  # [P x 3] the viewing-direction coordinates clustered beside the positions
    if facing_weight > 0 and directions is not None:
        radius = (sparse - sparse.mean(0)).square().sum(-1).mean().sqrt()
        side = (facing_weight * radius).to(points.dtype) * directions.to(points.dtype)
    coords = points if side is None else torch.cat([points, side], -1)
    # float32 halves the cost of Lloyd's distance blocks; the centres are re-expressed through
    # the keypoints in float64 below
    centres, labels = kmeans(coords.float(), n_clusters, kmeans_iters, seed)
    centres = centres.to(dt)
    weight = torch.bincount(labels, minlength=centres.shape[0]).to(dt) / points.shape[0]
    keep = weight > density_threshold
    # anchors (the keypoints) face no side: their neighbours come from every side
    centre_side = torch.cat([centres[keep, 3:], centres.new_zeros(k, centres.shape[1] - 3)])
    centres = torch.cat([centres[keep, :3], sparse])
    weight = torch.cat([weight[keep], torch.ones(k, dtype=dt)])
    m, ok = dense_from_sparse(centres, sparse, tetrahedra(k), tolerance)
    anchors = torch.zeros(centres.shape[0], dtype=torch.bool)
    anchors[-k:] = True
    # anchors are exact keypoints; with < 4 keypoints there are no tetrahedra to carry them
    m[anchors] = torch.eye(k, dtype=m.dtype)
    ok = ok | anchors
    centres, weight, m, centre_side = centres[ok], weight[ok], m[ok], centre_side[ok]
    xyz = m @ sparse
    ft = features.dtype
    psi, mean, std, facing = neighbour_features(
        torch.cat([xyz, centre_side], -1).to(ft), coords.to(ft), features, feature_neighbors,
        None if directions is None else directions.to(ft),
    )
    return DenseCloud(xyz, psi, mean, std, weight, m, facing.to(dt))


def object_prototypes(
    features: torch.Tensor, n: int, iters: int = 30, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Appearance prototypes of the whole object: k-means of training object descriptors.

    The dense cloud keeps only points inside the keypoint hull, so where the keypoints are
    nearly coplanar (a bottle's silhouette, a monitor's front frame) most of the object has no
    dense point. The prototypes cover every object cell of the training masks; they only say
    "this looks like the object" (the test-time feature mask), never where.

    Args:
        features: ``[P x C]`` unit descriptors of training object cells (P >= 1).
        n: number of prototypes (clipped to P).
        iters, seed: k-means settings.
    Returns:
        ``(psi [n x C] unit, sim_mean [n], sim_std [n])``: each prototype's normalised mean
        member descriptor and the mean / std of its members' similarity to it (0 std for a
        single member).
    """
    centres, labels = kmeans(features.float(), n, iters, seed)
    k = centres.shape[0]
    psi = F.normalize(torch.zeros_like(centres).index_add_(0, labels, features.float()), dim=-1)
    sim = (features.float() * psi[labels]).sum(-1)
    count = torch.bincount(labels, minlength=k).float()
    mean = torch.zeros(k).index_add_(0, labels, sim) / count.clamp_min(1)
    var = torch.zeros(k).index_add_(0, labels, (sim - mean[labels]) ** 2)
    std = (var / (count - 1).clamp_min(1)).sqrt()
    keep = count > 0
    return psi[keep], mean[keep], std[keep]
