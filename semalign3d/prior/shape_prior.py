"""The statistical shape prior: Beta distributions over keypoint relations (method.md §2.6, 2.11c).

The same negative log-likelihood places and refines the canonical sparse cloud (§2.7) and is the
alignment's geometric term ``L_geom`` (§2.11c):

``L_geom = 1/G [ -mean log B(r) - mean log B((c + 1) / 2) - sum_a mean log B((cos_a + 1) / 2) ]``

with ``G`` the number of feature groups used (5 with triangle+apex relations, 2 without).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from semalign3d.prior.beta import beta_log_pdf
from semalign3d.prior.relations import EdgePairs, Tets, edge_pair_features, tet_features

_CLAMP = 1e-6


@dataclass(frozen=True)
class ShapePrior:
    """Beta parameters of the valid relations.

    Attributes:
        edge_index: ``[E x 4]`` long keypoint positions ``(i, j, k, l)``.
        edge_cos_ab: ``[E x 2]`` Beta ``(a, b)`` of ``(c + 1) / 2``.
        edge_ratio_ab: ``[E x 2]`` Beta ``(a, b)`` of ``r``.
        tet_index: ``[T x 4]`` long ``(t0, t1, t2, v)`` (``T`` may be 0).
        tet_ab: ``[T x 3 x 2]`` Beta ``(a, b)`` of ``(cos_axis + 1) / 2`` for axes x, y, z.

    ``edges`` and ``tets`` (not fields: derived, never saved) hold the relations factored once
    for :func:`geometric_nll`, which evaluates them at every alignment step.
    """

    edge_index: torch.Tensor
    edge_cos_ab: torch.Tensor
    edge_ratio_ab: torch.Tensor
    tet_index: torch.Tensor
    tet_ab: torch.Tensor

    def __post_init__(self) -> None:
        # factoring needs torch.unique, whose output shape a compiled energy cannot trace
        object.__setattr__(self, "edges", EdgePairs.of(self.edge_index))
        object.__setattr__(self, "tets", Tets.of(self.tet_index))

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[0])

    @property
    def num_tets(self) -> int:
        return int(self.tet_index.shape[0])

    def to(self, device=None, dtype=None) -> ShapePrior:
        old = [getattr(self, f.name) for f in fields(self)]
        new = [t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in old]
        # the factoring (torch.unique) is worth skipping: the alignment calls this per batch
        if all(n is o for n, o in zip(new, old, strict=True)):
            return self
        return ShapePrior(*new)

    def without_tets(self) -> ShapePrior:
        return ShapePrior(
            self.edge_index,
            self.edge_cos_ab,
            self.edge_ratio_ab,
            self.tet_index[:0],
            self.tet_ab[:0],
        )

    def subset(self, edges: torch.Tensor, tets: torch.Tensor) -> ShapePrior:
        """The prior restricted to the selected relations (bool or index tensors)."""
        return ShapePrior(
            self.edge_index[edges],
            self.edge_cos_ab[edges],
            self.edge_ratio_ab[edges],
            self.tet_index[tets],
            self.tet_ab[tets],
        )


def _mean_nll(x: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """``[B x R]`` values in [0, 1], ``[R x 2]`` Beta params -> ``[B]`` mean NLL (0 if R = 0)."""
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[0])
    x = x.clamp(_CLAMP, 1 - _CLAMP)
    return -beta_log_pdf(x, ab[:, 0], ab[:, 1]).mean(-1)


def geometric_nll(points: torch.Tensor, prior: ShapePrior) -> torch.Tensor:
    """``L_geom`` of a batch of keypoint clouds.

    Args:
        points: ``[B x K x 3]`` keypoints (positions index ``prior``'s relations).
        prior: the shape prior.
    Returns:
        ``[B]`` mean negative log-likelihood per feature group, averaged over groups.
    """
    cos, ratio = edge_pair_features(points, prior.edges)
    total = _mean_nll(ratio, prior.edge_ratio_ab) + _mean_nll((cos + 1) / 2, prior.edge_cos_ab)
    groups = 2
    if prior.num_tets:
        t = (tet_features(points, prior.tets) + 1) / 2
        for axis in range(3):
            total = total + _mean_nll(t[..., axis], prior.tet_ab[:, axis])
        groups = 5
    return total / groups
