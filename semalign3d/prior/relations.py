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


# A family is evaluated on dense grids (all edge pairs; all (t0, i, j, v) quadruples) and its
# relations read off them once it fills at least this share of the grid. The grids' backward is
# matrix products and axis sums, where per-relation gathers scatter gradients back into a few
# heavily shared rows (serialised atomic adds on a GPU). The switches are the crossovers measured
# on the CPU (bench/relations.py, 25 keypoints, 96 clouds, 2 cores): all 44850 edge pairs
# (share 0.50) 1.8x faster on the grid, all 50600 tets (0.13) 4x, half of them (0.25, 0.065)
# 2x slower and 2x faster; the CPU profile's 2000-relation subsample 10-20x slower.
_EDGE_GRID_SHARE = 0.3
_TET_GRID_SHARE = 0.05


@dataclass(frozen=True)
class EdgePairs:
    """Edge-pair relations factored through their distinct edges.

    A relation's edge is shared by many relations (each of the 300 edges of 25 keypoints is in
    299 pairs), so its vector is computed once per edge. A dense family (``grid``) reads its
    cosines off the ``U x U`` Gram matrix of the edge vectors divided by ``|e_i| |e_j| + eps``
    and its ratios off the ``U x U`` grid of norm ratios; a sparse one gathers both edges of
    every relation. Both use the same formulas, so they differ only by rounding.

    Attributes:
        ends: ``[U x 2]`` long distinct edges ``(i, j)``.
        pairs: ``[E x 2]`` long rows of ``ends`` forming each relation.
        cells: ``[E]`` long cell ``pairs[:, 0] * U + pairs[:, 1]`` of each relation in the grid.
        grid: evaluate on the grid.
    """

    ends: torch.Tensor
    pairs: torch.Tensor
    cells: torch.Tensor
    grid: bool

    @classmethod
    def of(cls, index: torch.Tensor, grid: bool | None = None) -> EdgePairs:
        """Factor ``[E x 4]`` ``(i, j, k, l)`` relations; ``grid`` None decides by density."""
        ends, pos = _distinct_rows(torch.cat([index[:, :2], index[:, 2:]]))
        pairs = pos.reshape(2, -1).T.contiguous()
        u = ends.shape[0]
        if grid is None:
            grid = pairs.shape[0] > 0 and pairs.shape[0] >= _EDGE_GRID_SHARE * u * u
        return cls(ends, pairs, pairs[:, 0] * u + pairs[:, 1], grid)

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


@dataclass(frozen=True)
class Tets:
    """Triangle+apex relations, factored for both ways :func:`tet_features` evaluates them.

    With ``a, b, d`` the vectors from ``t0`` to ``t1, t2, v``, ``u = w / (|w| + eps)`` and
    ``c = a x b``, the cosines are ``x.d = u(a).u(d)``, ``z.d = c.u(d) / (|c| + eps)`` and
    ``y.d = (|a| + eps)(|b| + eps)(u(a).u(a) u(b).u(d) - u(a).u(b) u(a).u(d)) / (|c| + eps)``
    (``y = z x x`` expanded). A dense family (``grid``) reads them off grids over all
    ``(t0, i, j[, v])`` (compiled, ``z.d`` per relation from the grids of ``c`` and ``u(d)``);
    a sparse one builds the frame of each distinct triangle and the
    direction of each distinct apex and gathers them per relation.

    Attributes:
        size: the grids span points ``0 .. size - 1`` (the largest index + 1).
        grid: evaluate on the grids.
        grid_cells: ``[T x 5]`` long cells ``(t0, t1, t2)``, ``(t0, t1, v)``, ``(t0, t2, v)`` of a
            ``size^3`` grid, ``(t0, t1, t2, v)`` of a ``size^4`` grid and ``(t0, v)`` of a
            ``size^2`` grid.
        tris: ``[R x 3]`` long distinct ordered triangles ``(t0, t1, t2)``.
        apex: ``[A x 2]`` long distinct directions ``(t0, v)``.
        pairs: ``[T x 2]`` long (row of ``tris``, row of ``apex``) of each relation.
    """

    size: int
    grid: bool
    grid_cells: torch.Tensor
    tris: torch.Tensor
    apex: torch.Tensor
    pairs: torch.Tensor

    @classmethod
    def of(cls, index: torch.Tensor, grid: bool | None = None) -> Tets:
        """Factor ``[T x 4]`` ``(t0, t1, t2, v)`` relations; ``grid`` None decides by density."""
        k = int(index.max()) + 1 if index.numel() else 0

        def cells(*cols: int) -> torch.Tensor:  # row-major cell in a grid over the columns
            out = torch.zeros_like(index[:, 0])
            for c in cols:
                out = out * k + index[:, c]
            return out

        grid_cells = torch.stack(
            [cells(0, 1, 2), cells(0, 1, 3), cells(0, 2, 3), cells(0, 1, 2, 3), cells(0, 3)], 1
        )
        if grid is None:
            grid = index.shape[0] > 0 and index.shape[0] >= _TET_GRID_SHARE * k**4
        tris, tpos = _distinct_rows(index[:, :3])
        apex, apos = _distinct_rows(index[:, [0, 3]])
        return cls(k, grid, grid_cells, tris, apex, torch.stack([tpos, apos], 1))

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


def _read(grid: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """``[B x N x ...]`` grid, ``[M]`` long cells -> ``[B x M x ...]``."""
    # gather, not index_select: the latter's index_add backward from a grid crashed torch
    # 2.13's vectorised CPU inductor code (heap corruption) in the compiled alignment energy
    idx = cells.reshape(1, -1, *[1] * (grid.dim() - 2))
    return grid.gather(1, idx.expand(grid.shape[0], -1, *grid.shape[2:]))


def edge_pair_features(
    points: torch.Tensor, index: torch.Tensor | EdgePairs
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge-pair cosines and length ratios.

    Args:
        points: ``[B x K x 3]`` (NaN rows propagate to NaN features of the relations that use
            them).
        index: ``[E x 4]`` long, or the same relations factored (:class:`EdgePairs`; factor
            once when the relations are used at every step).
    Returns:
        ``(cos [B x E] in [-1, 1], ratio [B x E] in [0, 1])``.
    """
    f = index if isinstance(index, EdgePairs) else EdgePairs.of(index)
    e = _pick(points, f.ends[:, 0]) - _pick(points, f.ends[:, 1])  # [B x U x 3]
    if f.grid:
        n = e.norm(dim=-1)[..., None]  # [B x U x 1]
        nt = n.transpose(1, 2)
        cos = (e @ e.transpose(1, 2)) / (n * nt + _EPS)
        ratio = n / (n + nt + _EPS)
        return _read(cos.flatten(1), f.cells), _read(ratio.flatten(1), f.cells)
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
        points: ``[B x K x 3]``. A NaN row gives NaN features only where a relation uses it,
            but on the grids it makes the gradient of its whole cloud NaN (the grids' matrix
            products multiply it by 0 in cells nobody reads): differentiate finite clouds only.
            The grids' products would also lose precision under TF32 or autocast, which the
            library never enables.
        index: ``[T x 4]`` long ``(t0, t1, t2, v)``, or the same relations wrapped
            (:class:`Tets`, which decides between the grids and per-relation gathers).
    Returns:
        ``[B x T x 3]`` cosines with the frame axes ``(x, y, z)``: ``x = norm(t1 - t0)``,
        ``z = norm((t1 - t0) x (t2 - t0))``, ``y = z x x``.
    """
    f = index if isinstance(index, Tets) else Tets.of(index)
    if not f.grid:
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
    p = points[:, : f.size]
    diff = p[:, None] - p[:, :, None]  # [B x k x k x 3], x_v - x_t0 at (t0, v)
    norm = diff.norm(dim=-1, keepdim=True)
    unit = diff / (norm + _EPS)
    dots = unit @ unit.transpose(-1, -2)  # [B x k x k x k], u(t0 -> i).u(t0 -> j)
    cross = torch.cross(diff[:, :, :, None], diff[:, :, None], dim=-1)  # [B x k x k x k x 3]
    inv_sin = 1 / (cross.norm(dim=-1) + _EPS)
    scale = (norm + _EPS) * (norm + _EPS).transpose(-1, -2) * inv_sin  # (t0, i, j)
    self_dot = dots.diagonal(dim1=-2, dim2=-1)[..., None]  # u(t0 -> i).u(t0 -> i) at (t0, i, j)
    tri, ad_cell, bd_cell, quad, apex = f.grid_cells.unbind(1)
    if torch.compiler.is_compiling():
        # Compiled, c.u(t0 -> v) is a 3-term dot product per relation, read straight from the
        # cross products and directions, not off a k^4 grid (2.4 GB for 1536 clouds of 25
        # points, 13 % of it read): a full-size H100 alignment went from 30.3 to 27.8 ms and
        # its peak memory from 8.1 to 5.1 GiB (bench/RESULTS.md). Eager keeps the grid, with
        # which the CPU crossovers above were measured and the representations built.
        triple = (_read(cross.flatten(1, 3), tri) * _read(unit.flatten(1, 2), apex)).sum(-1)
    else:
        grid = cross.flatten(2, 3) @ unit.transpose(-1, -2)  # [B x k x k^2 x k], c.u(t0 -> v)
        triple = _read(grid.flatten(1), quad)
    ab, ad, bd = (
        _read(dots.flatten(1), tri),
        _read(dots.flatten(1), ad_cell),
        _read(dots.flatten(1), bd_cell),
    )
    scale_aa = _read((scale * self_dot).flatten(1), tri)
    y = scale_aa * bd - _read(scale.flatten(1), tri) * ab * ad
    z = triple * _read(inv_sin.flatten(1), tri)
    return torch.stack([ad, y, z], -1)
