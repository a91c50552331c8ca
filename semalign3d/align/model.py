"""The parts of a class representation that the alignment reads, prepared once per run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from semalign3d.align.chirality import chiral_relations
from semalign3d.config import AlignConfig
from semalign3d.prior.relations import Tets
from semalign3d.prior.representation import ClassRepresentation, deform
from semalign3d.prior.shape_prior import ShapePrior


@dataclass(frozen=True)
class AlignModel:
    """Model tensors of one category (``K`` keypoints, ``N`` dense points, ``C`` channels).

    Attributes:
        sparse_xyz: ``[K x 3]`` canonical keypoints.
        sparse_features, dense_features: ``[K x C]``, ``[N x C]`` unit descriptors.
        sparse_sim_mean, sparse_sim_std, dense_sim_mean, dense_sim_std: ``[K]``, ``[N]``.
        dense_from_sparse: ``[N x K]`` linear deformation (dense = dense_from_sparse @ sparse).
        prior: the Beta shape prior used by ``L_geom`` (tets removed unless ``cfg.geom_tets``).
        dense_index: ``[N]`` long: rows of the representation's dense cloud that were kept.
        dense_facing: ``[N x 3]`` canonical facing vectors (see :mod:`semalign3d.align.visibility`).
        chiral_index: ``[T x 4]`` long triangle+apex relations of ``L_chiral``.
        chiral_sign: ``[T]`` their expected apex side (+1 / -1).
        sparse_facing: ``[K x 3]`` canonical facing vectors of the keypoints, or None.
        object_features, object_sim_mean, object_sim_std: ``[P x C]``, ``[P]``, ``[P]`` object
            appearance prototypes for the feature mask (``P = 0``: none).

    ``chiral`` (derived, not a field) holds ``chiral_index`` factored once for ``L_chiral``.
    """

    sparse_xyz: torch.Tensor
    sparse_features: torch.Tensor
    sparse_sim_mean: torch.Tensor
    sparse_sim_std: torch.Tensor
    dense_features: torch.Tensor
    dense_sim_mean: torch.Tensor
    dense_sim_std: torch.Tensor
    dense_from_sparse: torch.Tensor
    prior: ShapePrior
    dense_index: torch.Tensor
    dense_facing: torch.Tensor | None = None
    chiral_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.long))
    chiral_sign: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    object_features: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    object_sim_mean: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    object_sim_std: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    sparse_facing: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # factoring needs torch.unique, whose output shape a compiled energy cannot trace
        object.__setattr__(self, "chiral", Tets.of(self.chiral_index))

    @property
    def num_keypoints(self) -> int:
        return int(self.sparse_xyz.shape[0])

    @property
    def num_dense(self) -> int:
        return int(self.dense_from_sparse.shape[0])

    def deform(self, sparse: torch.Tensor) -> torch.Tensor:
        """Dense points following keypoints: ``[... x K x 3]`` -> ``[... x N x 3]``."""
        return deform(self.dense_from_sparse, sparse)

    def to(self, device=None, dtype=None) -> AlignModel:
        def conv(t):
            if not isinstance(t, torch.Tensor):
                return t.to(device, dtype)  # the prior
            return t.to(device, dtype) if t.is_floating_point() else t.to(device)

        old = {f.name: getattr(self, f.name) for f in fields(self)}
        new = {k: None if v is None else conv(v) for k, v in old.items()}
        # nothing moves (the alignment calls this per batch): skip refactoring the relations
        if all(new[k] is v for k, v in old.items()):
            return self
        return AlignModel(**new)


def prepare_model(rep: ClassRepresentation, cfg: AlignConfig) -> AlignModel:
    """Select what the alignment uses: a fixed-seed subsample of ``cfg.max_dense_points`` dense
    points (0 = all), the prior with or without triangle+apex relations, and at most
    ``cfg.max_geom_relations`` relations of each family (0 = all), and the relations of
    ``L_chiral`` (from every triangle+apex relation, capped the same way)."""
    n = rep.num_dense
    if n == 0:
        raise ValueError(f"representation of '{rep.category}' has no dense points")
    # an option the file cannot serve would silently measure the baseline under another name
    if cfg.keypoint_facing and cfg.facing_tau > 0 and rep.sparse_facing.shape[0] == 0:
        raise ValueError(f"align.keypoint_facing: the representation of '{rep.category}' has no "
                         "keypoint facing vectors; rebuild it with 'semalign3d prior build' "
                         "or set align.keypoint_facing: false")
    if cfg.foreground_prototypes and rep.object_features.shape[0] == 0:
        raise ValueError(f"align.foreground_prototypes: the representation of '{rep.category}' "
                         "has no object prototypes; rebuild it with prior.object_prototypes > 0")
    if 0 < cfg.max_dense_points < n:
        g = torch.Generator().manual_seed(cfg.seed)
        index = torch.randperm(n, generator=g)[: cfg.max_dense_points].sort().values
    else:
        index = torch.arange(n)
    index = index.to(rep.dense_xyz.device)
    prior = rep.prior if cfg.geom_tets else rep.prior.without_tets()
    if cfg.max_geom_relations > 0:
        g = torch.Generator().manual_seed(cfg.seed + 1)
        keep = [
            torch.randperm(n_r, generator=g)[: cfg.max_geom_relations].sort().values
            for n_r in (prior.num_edges, prior.num_tets)
        ]
        prior = prior.subset(keep[0].to(index.device), keep[1].to(index.device))
    chiral_index, chiral_sign = chiral_relations(rep.prior, cfg.chirality_min_cos)
    if 0 < cfg.max_geom_relations < len(chiral_sign):
        g = torch.Generator().manual_seed(cfg.seed + 2)
        keep_c = torch.randperm(len(chiral_sign), generator=g)[: cfg.max_geom_relations]
        keep_c = keep_c.sort().values.to(chiral_sign.device)
        chiral_index, chiral_sign = chiral_index[keep_c], chiral_sign[keep_c]
    return AlignModel(
        sparse_xyz=rep.sparse_xyz,
        sparse_features=rep.sparse_features,
        sparse_sim_mean=rep.sparse_sim_mean,
        sparse_sim_std=rep.sparse_sim_std,
        dense_features=rep.dense_features[index],
        dense_sim_mean=rep.dense_sim_mean[index],
        dense_sim_std=rep.dense_sim_std[index],
        dense_from_sparse=rep.dense_from_sparse[index],
        prior=prior,
        dense_index=index,
        dense_facing=rep.dense_facing[index],
        chiral_index=chiral_index,
        chiral_sign=chiral_sign,
        sparse_facing=(rep.sparse_facing if cfg.keypoint_facing and rep.sparse_facing.shape[0]
                       else None),
        **({"object_features": rep.object_features, "object_sim_mean": rep.object_sim_mean,
            "object_sim_std": rep.object_sim_std} if cfg.foreground_prototypes else {}),
    )
