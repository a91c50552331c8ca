"""Figures of a class representation for the book."""

from __future__ import annotations

import torch

from semalign3d.prior.representation import ClassRepresentation


def pca_colors(features: torch.Tensor) -> torch.Tensor:
    """First three principal components of ``[N x C]`` features scaled to RGB ``[N x 3]``
    in [0, 1]."""
    x = features.double() - features.double().mean(0)
    if x.shape[0] < 2:
        return torch.full((x.shape[0], 3), 0.5, dtype=torch.float64)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    p = x @ v[: min(3, v.shape[0])].T
    if p.shape[1] < 3:
        p = torch.cat([p, p.new_zeros(p.shape[0], 3 - p.shape[1])], -1)
    lo, hi = p.min(0).values, p.max(0).values
    return (p - lo) / (hi - lo).clamp_min(1e-12)


def plot_representation(
    rep: ClassRepresentation,
    ax=None,
    skeleton: bool = False,
    labels: dict[int, str] | None = None,
    point_size: float = 6.0,
):
    """3D scatter of the dense cloud (coloured by the PCA of its features, size by density)
    and the sparse keypoints (black, labelled by keypoint id).

    Args:
        rep: the representation.
        ax: a matplotlib 3D axis (default: a new figure).
        skeleton: draw edges from each keypoint to its two nearest keypoints.
        labels: optional names per keypoint id (default: the id).
        point_size: marker size of the dense points.
    Returns:
        the axis.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig = plt.figure(figsize=(6, 6))
        ax = fig.add_subplot(projection="3d")
    dense = rep.dense_xyz.double()
    sparse = rep.sparse_xyz.double()
    colors = pca_colors(rep.dense_features).numpy()
    # matplotlib's 3D y axis points away; show the camera convention (y down, z forward)
    d, s = dense.numpy(), sparse.numpy()
    ax.scatter(d[:, 0], d[:, 2], -d[:, 1], c=colors, s=point_size, alpha=0.8, depthshade=False)
    ax.scatter(s[:, 0], s[:, 2], -s[:, 1], c="k", s=30, marker="^", depthshade=False)
    for i, kid in enumerate(rep.keypoint_ids.tolist()):
        name = labels.get(kid, str(kid)) if labels else str(kid)
        ax.text(s[i, 0], s[i, 2], -s[i, 1], name, fontsize=8)
    if skeleton and sparse.shape[0] > 1:
        dist = torch.cdist(sparse, sparse) + torch.eye(sparse.shape[0], dtype=sparse.dtype) * 1e9
        nn = dist.topk(min(2, sparse.shape[0] - 1), largest=False).indices
        for i in range(sparse.shape[0]):
            for j in nn[i].tolist():
                ax.plot(*[[s[i, a], s[j, a]] for a in (0, 2)], [-s[i, 1], -s[j, 1]], "k-", lw=0.6)
    lo, hi = dense.min(0).values, dense.max(0).values
    mid, half = (lo + hi) / 2, float((hi - lo).max()) / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[2] - half, mid[2] + half)
    ax.set_zlim(-mid[1] - half, -mid[1] + half)
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_zlabel("-y")
    ax.set_title(f"{rep.category}: {rep.num_keypoints} keypoints, {rep.num_dense} dense points")
    return ax
