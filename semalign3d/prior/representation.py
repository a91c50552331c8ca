"""The 3D object-class representation of one category, and its versioned file format.

One ``.safetensors`` file per category holds every tensor; its metadata holds a JSON document
(format version, category, build config, data provenance, counts). ``load`` checks the version
and every shape, so a stale or truncated file fails with a message naming it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from semalign3d.io import atomic_write
from semalign3d.prior.shape_prior import ShapePrior

FORMAT = "semalign3d-representation"
VERSION = 3  # 2: dense_facing; 3: object prototypes, sparse_facing


class RepresentationError(ValueError):
    """A representation file is missing, stale or inconsistent."""


def deform(dense_from_sparse: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """Dense points ``[... x N x 3]`` following keypoints ``[... x K x 3]`` through the fixed
    ``[N x K]`` matrix."""
    # folded into one [B*3 x K] @ [K x N] product: a broadcast 2D @ 4D matmul that
    # requires grad takes a slow path on CPU (~10^4 x slower at alignment sizes)
    w = dense_from_sparse.to(sparse.dtype)
    return torch.matmul(sparse.transpose(-1, -2), w.T).transpose(-1, -2)


@dataclass(frozen=True)
class ClassRepresentation:
    """Sparse keypoint cloud + dense feature cloud + shape prior of one category.

    ``K`` is the number of keypoint ids used (seen in training), ``N`` the number of dense points,
    ``C`` the descriptor dimension.

    Attributes:
        category: SPair-71k category name.
        keypoint_ids: ``[K]`` long: category keypoint id of each sparse point.
        sparse_xyz: ``[K x 3]`` canonical keypoints.
        sparse_features: ``[K x C]`` unit descriptors ``phi_k``.
        sparse_sim_mean, sparse_sim_std: ``[K]`` mean / std over training images of
            ``<F_s(u_k), phi_k>`` (calibrates the semantic likelihood).
        dense_xyz: ``[N x 3]`` canonical dense points (cluster centres, anchors included).
        dense_features: ``[N x C]`` unit descriptors ``psi_n``.
        dense_sim_mean, dense_sim_std: ``[N]``.
        dense_weight: ``[N]`` cluster density (fraction of merged points; anchors 1).
        dense_from_sparse: ``[N x K]``: ``dense_xyz = dense_from_sparse @ sparse_xyz`` for the
            canonical cloud and for every deformation of it (rows sum to 1).
        dense_facing: ``[N x 3]`` mean unit direction (canonical frame) from each dense point
            towards the training cameras that saw it; its length in [0, 1] says how
            consistently it was seen from one side (0: unknown or seen from all around).
        prior: the Beta shape prior over keypoint positions ``0..K-1``.
        sparse_facing: ``[K x 3]`` the keypoints' ``dense_facing`` (mean unit direction towards
            the training cameras that saw each one), or ``[0 x 3]`` when unknown.
        object_features: ``[P x C]`` unit appearance prototypes of the whole object (k-means
            of training object descriptors, hull or not; ``P`` may be 0): test-time masks.
        object_sim_mean, object_sim_std: ``[P]`` their members' similarity statistics.
        meta: JSON-able provenance (config, images used/skipped, timings).
    """

    category: str
    keypoint_ids: torch.Tensor
    sparse_xyz: torch.Tensor
    sparse_features: torch.Tensor
    sparse_sim_mean: torch.Tensor
    sparse_sim_std: torch.Tensor
    dense_xyz: torch.Tensor
    dense_features: torch.Tensor
    dense_sim_mean: torch.Tensor
    dense_sim_std: torch.Tensor
    dense_weight: torch.Tensor
    dense_from_sparse: torch.Tensor
    dense_facing: torch.Tensor
    prior: ShapePrior
    sparse_facing: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    object_features: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    object_sim_mean: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    object_sim_std: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoint_ids.shape[0])

    @property
    def num_dense(self) -> int:
        return int(self.dense_xyz.shape[0])

    def deform_dense(self, sparse: torch.Tensor) -> torch.Tensor:
        """Dense points following keypoints ``[B x K x 3]`` -> ``[B x N x 3]`` (one matmul)."""
        return deform(self.dense_from_sparse, sparse)

    def to(self, device=None, dtype=None) -> ClassRepresentation:
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                changes[f.name] = v.to(device) if not v.is_floating_point() else v.to(device, dtype)
        changes["prior"] = self.prior.to(device, dtype)
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------- file I/O
    def save(self, path: str | Path) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                tensors[f.name] = v.contiguous()
        for f in dataclasses.fields(ShapePrior):
            tensors[f"prior.{f.name}"] = getattr(self.prior, f.name).contiguous()
        meta = {"format": FORMAT, "version": VERSION, "category": self.category, **self.meta}
        header = {"semalign3d": json.dumps(meta)}
        return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=header))

    @classmethod
    def load(cls, path: str | Path) -> ClassRepresentation:
        path = Path(path)
        if not path.is_file():
            raise RepresentationError(
                f"{path}: representation file not found; build it with "
                "'semalign3d prior build --root DIR --category CAT --out FILE'"
            )
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise RepresentationError(f"{path}: not a readable safetensors file ({e})") from e
        try:
            meta = json.loads(header["semalign3d"])
        except (KeyError, json.JSONDecodeError) as e:
            raise RepresentationError(f"{path}: no semalign3d metadata in the file") from e
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise RepresentationError(
                f"{path}: format {meta.get('format')} v{meta.get('version')}, expected "
                f"{FORMAT} v{VERSION}; rebuild it with 'semalign3d prior build'"
            )
        try:
            prior = ShapePrior(
                **{f.name: tensors.pop(f"prior.{f.name}") for f in dataclasses.fields(ShapePrior)}
            )
            category = meta.pop("category")
            for k in ("format", "version"):
                meta.pop(k)
            rep = cls(category=category, prior=prior, meta=meta, **tensors)
        except (KeyError, TypeError) as e:
            raise RepresentationError(f"{path}: missing or unexpected tensor ({e})") from e
        rep.validate(path)
        return rep

    def validate(self, where: str | Path = "representation") -> None:
        """Check every shape against ``K``, ``N``, ``C``; raise RepresentationError."""
        k, n = self.num_keypoints, self.num_dense
        c = int(self.sparse_features.shape[-1])
        expect = {
            "sparse_xyz": (k, 3),
            "sparse_features": (k, c),
            "sparse_sim_mean": (k,),
            "sparse_sim_std": (k,),
            "dense_xyz": (n, 3),
            "dense_features": (n, c),
            "dense_sim_mean": (n,),
            "dense_sim_std": (n,),
            "dense_weight": (n,),
            "dense_from_sparse": (n, k),
            "dense_facing": (n, 3),
        }
        # optional: sparse_facing [0 x 3] when unknown; P = 0 object prototypes allowed
        expect["sparse_facing"] = (k if self.sparse_facing.shape[0] else 0, 3)
        p_n = int(self.object_features.shape[0])
        expect |= {"object_sim_mean": (p_n,), "object_sim_std": (p_n,)}
        if p_n:
            expect["object_features"] = (p_n, c)
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise RepresentationError(f"{where}: {name} has shape {got}, expected {shape}")
        p = self.prior
        for name, t in (("edge_index", p.edge_index), ("tet_index", p.tet_index)):
            if t.numel() and (int(t.max()) >= k or int(t.min()) < 0):
                raise RepresentationError(f"{where}: prior.{name} indexes outside 0..{k - 1}")
        for name, t in vars(self).items():
            bad = isinstance(t, torch.Tensor) and t.is_floating_point() and not t.isfinite().all()
            if bad:
                raise RepresentationError(f"{where}: {name} contains NaN or Inf")
