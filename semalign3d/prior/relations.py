"""Similarity-invariant keypoint relations (method.md §2.6).

Two families, both invariant to rotation, translation and uniform scale:

* edge pairs ``(i, j, k, l)``: ``c = cos angle(x_i - x_j, x_k - x_l)`` and
  ``r = |x_i - x_j| / (|x_i - x_j| + |x_k - x_l|)``;
* triangle + apex ``(t0, t1, t2, v)`` ("tets"): the cosines between ``norm(x_v - x_t0)`` and the
  triangle's local frame ``x = norm(t1 - t0)``, ``z = norm((t1 - t0) x (t2 - t0))``, ``y = z x x``.
  These flip sign under a reflection, so they tell a shape from its mirror image.

Index tensors use positions 0..K-1 of the keypoint tensor they are applied to.
"""

from __future__ import annotations

import itertools

import torch

_EPS = 1e-6


def edge_pair_index(k: int) -> torch.Tensor:
    """All unordered pairs of distinct edges over ``k`` points: ``[E x 4]`` long ``(i, j, k, l)``
    with edges ``(i < j)`` and ``(k < l)``; ``E = C(C(k, 2), 2)``."""
    edges = torch.combinations(torch.arange(k), 2)
    if edges.shape[0] < 2:
        return torch.zeros(0, 4, dtype=torch.long)
    pairs = torch.combinations(torch.arange(edges.shape[0]), 2)
    return torch.cat([edges[pairs[:, 0]], edges[pairs[:, 1]]], dim=1)


def tet_index(k: int) -> torch.Tensor:
    """Every 4-subset with its 4 cyclic (triangle, apex) choices: ``[4 C(k, 4) x 4]`` long
    ``(t0, t1, t2, v)``."""
    quads = list(itertools.combinations(range(k), 4))
    if not quads:
        return torch.zeros(0, 4, dtype=torch.long)
    q = torch.tensor(quads)
    rolls = [q.roll(-s, dims=1) for s in range(4)]
    return torch.stack(rolls, 1).reshape(-1, 4)


def edge_pair_features(
    points: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-pair cosines and length ratios.

    Args:
        points: ``[B x K x 3]`` (NaN rows propagate to NaN features).
        index: ``[E x 4]`` long.
    Returns:
        ``(cos [B x E] in [-1, 1], ratio [B x E] in [0, 1])``.
    """
    # index_select, not advanced indexing: its backward is an index_add, while indexing's is
    # a sorting index_put that took half of a GPU alignment step
    e1 = points.index_select(1, index[:, 0]) - points.index_select(1, index[:, 1])
    e2 = points.index_select(1, index[:, 2]) - points.index_select(1, index[:, 3])
    n1 = e1.norm(dim=-1)
    n2 = e2.norm(dim=-1)
    cos = (e1 * e2).sum(-1) / (n1 * n2 + _EPS)
    ratio = n1 / (n1 + n2 + _EPS)
    return cos, ratio


def tet_features(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Apex direction cosines in the triangle frame.

    Args:
        points: ``[B x K x 3]``.
        index: ``[T x 4]`` long ``(t0, t1, t2, v)``.
    Returns:
        ``[B x T x 3]`` cosines with the frame axes ``(x, y, z)``.
    """
    t0, t1, t2, v = (points.index_select(1, index[:, c]) for c in range(4))
    a, b = t1 - t0, t2 - t0
    x = a / (a.norm(dim=-1, keepdim=True) + _EPS)
    z = torch.cross(a, b, dim=-1)
    z = z / (z.norm(dim=-1, keepdim=True) + _EPS)
    y = torch.cross(z, x, dim=-1)
    d = v - t0
    d = d / (d.norm(dim=-1, keepdim=True) + _EPS)
    return torch.stack([(d * x).sum(-1), (d * y).sum(-1), (d * z).sum(-1)], -1)
