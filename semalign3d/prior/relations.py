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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class EdgePairs:
    """Edge-pair relations factored through their distinct edges.

    A relation's edge is shared by many relations (each of the 300 edges of 25 keypoints is in
    299 pairs), so its vector is computed once per edge and then gathered. The gradient then
    scatters into ``U`` edges and ``2 U`` endpoints, not into ``K`` points from ``4 E`` places:
    on a GPU those few heavily shared targets serialised the atomic adds (a compiled alignment
    step at 24 x 32 hypotheses took half the time once factored; bench/RESULTS.md).

    Attributes:
        ends: ``[U x 2]`` long distinct edges ``(i, j)``.
        pairs: ``[E x 2]`` long rows of ``ends`` forming each relation.
    """

    ends: torch.Tensor
    pairs: torch.Tensor

    @classmethod
    def of(cls, index: torch.Tensor) -> EdgePairs:
        """Factor ``[E x 4]`` ``(i, j, k, l)`` relations."""
        ends, pos = _distinct_rows(torch.cat([index[:, :2], index[:, 2:]]))
        return cls(ends, pos.reshape(2, -1).T.contiguous())

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


@dataclass(frozen=True)
class Tets:
    """Triangle+apex relations factored through their distinct triangles and apex directions.

    Attributes:
        tris: ``[R x 3]`` long distinct ordered triangles ``(t0, t1, t2)``.
        apex: ``[A x 2]`` long distinct directions ``(t0, v)``.
        pairs: ``[T x 2]`` long (row of ``tris``, row of ``apex``) of each relation.
    """

    tris: torch.Tensor
    apex: torch.Tensor
    pairs: torch.Tensor

    @classmethod
    def of(cls, index: torch.Tensor) -> Tets:
        """Factor ``[T x 4]`` ``(t0, t1, t2, v)`` relations."""
        tris, tpos = _distinct_rows(index[:, :3])
        apex, apos = _distinct_rows(index[:, [0, 3]])
        return cls(tris, apex, torch.stack([tpos, apos], 1))

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


def _distinct_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N x W]`` long -> (distinct rows ``[D x W]``, row of each input ``[N]``)."""
    if rows.shape[0] == 0:  # torch.unique(dim=0) rejects empty input
        return rows, rows.new_zeros(0)
    return torch.unique(rows, dim=0, return_inverse=True)


def _pick(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    # index_select, not advanced indexing: its backward is an index_add, while indexing's is
    # a sorting index_put that took half of a GPU alignment step
    return x.index_select(1, rows)


def edge_pair_features(
    points: torch.Tensor, index: torch.Tensor | EdgePairs
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-pair cosines and length ratios.

    Args:
        points: ``[B x K x 3]`` (NaN rows propagate to NaN features).
        index: ``[E x 4]`` long, or the same relations factored (:class:`EdgePairs`; factor
            once when the relations are used at every step).
    Returns:
        ``(cos [B x E] in [-1, 1], ratio [B x E] in [0, 1])``.
    """
    f = index if isinstance(index, EdgePairs) else EdgePairs.of(index)
    e = _pick(points, f.ends[:, 0]) - _pick(points, f.ends[:, 1])  # [B x U x 3]
    e1, e2 = _pick(e, f.pairs[:, 0]), _pick(e, f.pairs[:, 1])
    # norms after the gather, not gathered per edge: the latter crashed torch 2.13's CPU
    # inductor (a fused backward corrupted the heap)
    n1, n2 = e1.norm(dim=-1), e2.norm(dim=-1)
    cos = (e1 * e2).sum(-1) / (n1 * n2 + _EPS)
    ratio = n1 / (n1 + n2 + _EPS)
    return cos, ratio


def tet_features(points: torch.Tensor, index: torch.Tensor | Tets) -> torch.Tensor:
    """Apex direction cosines in the triangle frame.

    Args:
        points: ``[B x K x 3]``.
        index: ``[T x 4]`` long ``(t0, t1, t2, v)``, or the same relations factored
            (:class:`Tets`).
    Returns:
        ``[B x T x 3]`` cosines with the frame axes ``(x, y, z)``.
    """
    f = index if isinstance(index, Tets) else Tets.of(index)
    t0, t1, t2 = (_pick(points, f.tris[:, c]) for c in range(3))
    a, b = t1 - t0, t2 - t0
    x = a / (a.norm(dim=-1, keepdim=True) + _EPS)
    z = torch.cross(a, b, dim=-1)
    z = z / (z.norm(dim=-1, keepdim=True) + _EPS)
    y = torch.cross(z, x, dim=-1)
    frame = torch.stack([x, y, z], -2)  # [B x R x 3 x 3], rows = axes
    d = _pick(points, f.apex[:, 1]) - _pick(points, f.apex[:, 0])
    d = d / (d.norm(dim=-1, keepdim=True) + _EPS)  # [B x A x 3]
    frames, dirs = _pick(frame, f.pairs[:, 0]), _pick(d, f.pairs[:, 1])
    return (frames * dirs[..., None, :]).sum(-1)
