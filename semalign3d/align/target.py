"""Per-image inputs of the alignment, and their stacking into one batch.

An :class:`AlignTarget` is everything the energy needs to know about one image: descriptors on
the alignment grid, a soft foreground mask, optionally a pseudo-depth map. :func:`stack_targets`
turns several of them into a :class:`TargetBatch`: the foreground cells ``Omega`` of every image
in normalised coordinates (padded to a common count), the precomputed ``log p_sem`` tables and the
blurred masks. Everything in the batch is fixed while optimising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semalign3d.align.foreground import (
    box_to_grid,
    depth_to_grid,
    feature_foreground,
    pixel_mask_to_grid,
    smooth,
)
from semalign3d.align.model import AlignModel
from semalign3d.align.semantic import log_p_sem, similarities
from semalign3d.config import AlignConfig
from semalign3d.geometry import principal_point
from semalign3d.models.base import DescriptorMap, FeatureGrid


class AlignError(ValueError):
    """An image cannot be aligned (no valid cells, empty mask, wrong model); names the image."""


@dataclass(frozen=True)
class AlignTarget:
    """One image as the alignment sees it.

    Attributes:
        name: image key, used in error messages and caches.
        grid: the alignment grid (``h x w`` cells over an ``height x width`` image).
        features: ``[h x w x C]`` unit descriptors.
        foreground: ``[h x w]`` soft foreground in [0, 1] (0 in the padding).
        depth: ``[h x w]`` pseudo-depth (near = small) or None.
    """

    name: str
    grid: FeatureGrid
    features: torch.Tensor
    foreground: torch.Tensor
    depth: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> AlignTarget:
        return AlignTarget(self.name, self.grid, self.features.to(device),
                           self.foreground.to(device),
                           None if self.depth is None else self.depth.to(device))


def pool_descriptors(desc: DescriptorMap, stride: int) -> DescriptorMap:
    """Average-pool a descriptor map by ``stride`` and re-normalise (a coarser alignment grid)."""
    if stride <= 1:
        return desc
    c, h, w = desc.features.shape
    if h % stride or w % stride:
        raise ValueError(f"grid {h}x{w} is not divisible by cell_stride {stride}")
    f = F.avg_pool2d(desc.features[None], stride)[0]
    grid = FeatureGrid(desc.grid.height, desc.grid.width, h // stride, w // stride)
    return DescriptorMap(F.normalize(f, dim=0), grid)


def make_target(
    name: str,
    desc: DescriptorMap,
    model: AlignModel,
    cfg: AlignConfig,
    mask: torch.Tensor | None = None,
    box: tuple[float, float, float, float] | None = None,
    depth: torch.Tensor | None = None,
) -> AlignTarget:
    """Build the target of one image.

    Args:
        name: image key for messages.
        desc: unit descriptors ``[C x h x w]`` with their grid.
        model: the category model; predicts the foreground when neither ``mask`` nor ``box``.
        cfg: alignment settings (``cell_stride``).
        mask: optional ``[H x W]`` bool object mask.
        box: optional object box ``(x0, y0, x1, y1)`` in pixels (used when ``mask`` is None).
        depth: optional ``[H x W]`` pseudo-depth.
    """
    if desc.features.shape[0] != model.sparse_features.shape[-1]:
        raise AlignError(
            f"{name}: descriptors have {desc.features.shape[0]} channels, the representation "
            f"{model.sparse_features.shape[-1]}; was it built with another encoder?"
        )
    d = pool_descriptors(desc, cfg.cell_stride)
    grid = d.grid
    feats = d.features.permute(1, 2, 0)
    valid = grid.valid_cells().to(feats.device)
    if not bool(valid.any()):
        raise AlignError(f"{name}: no descriptor cell lies inside the image")
    if mask is not None:
        fg = pixel_mask_to_grid(mask.to(feats.device), grid)
    elif box is not None:
        fg = box_to_grid(box, grid).to(feats.device)
    else:
        fg = smooth(feature_foreground(feats, model.to(feats.device, feats.dtype),
                                       cfg.foreground_floor), 0.7)
    fg = (fg.to(feats.dtype) * valid).clamp(0, 1)
    dm = depth_to_grid(depth.to(feats.device), grid).to(feats.dtype) if depth is not None else None
    return AlignTarget(name, grid, feats, fg, dm)


@dataclass(frozen=True)
class TargetBatch:
    """``I`` images stacked for one optimisation (``P`` = most foreground cells of any image).

    Attributes:
        names: ``I`` image keys.
        cells: ``[I x P x 2]`` normalised coordinates of the foreground cells ``Omega``.
        weight: ``[I x P]`` 1 for cells of ``Omega``, 0 for padding rows.
        log_sem_dense: ``[I x P x N]`` ``log p_sem`` between cells and dense points.
        log_sem_sparse: ``[I x Q x K]`` the same for keypoints, over the cells of
            :attr:`sparse_omega` (``Q = P`` when ``cfg.sparse_cells`` is ``"foreground"``).
        mask: ``[I x 1 x h x w]`` foreground blurred outwards over the padded square, divided by
            ``cfg.background_floor`` and capped at 1 (for ``L_background`` and ``L_order``).
        offset: ``[I x 2]`` padding / side: grid-sample coordinate is ``2 (u + offset) - 1``.
        principal: ``[I x 2]`` principal points.
        center: ``[I x 2]`` centre of ``Omega``'s bounding box (normalised).
        extent: ``[I]`` longer side of that box (normalised).
        z_bar: ``[I]`` target mean keypoint depth of ``L_depth``.
        depth: ``[I x 1 x h x w]`` pseudo-depth or None (when any image lacks one).
        sizes: ``I`` image sizes ``(height, width)``.
        sparse_cells, sparse_weight: ``[I x Q x 2]``, ``[I x Q]``: the cells ``L_sparse`` and the
            fitted starts search for keypoints, when not ``Omega`` (None: ``cells``, ``weight``).
    """

    names: list[str]
    cells: torch.Tensor
    weight: torch.Tensor
    log_sem_dense: torch.Tensor
    log_sem_sparse: torch.Tensor
    mask: torch.Tensor
    offset: torch.Tensor
    principal: torch.Tensor
    center: torch.Tensor
    extent: torch.Tensor
    z_bar: torch.Tensor
    depth: torch.Tensor | None
    sizes: list[tuple[int, int]]
    sparse_cells: torch.Tensor | None = None
    sparse_weight: torch.Tensor | None = None

    @property
    def num_images(self) -> int:
        return len(self.names)

    @property
    def sparse_omega(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cells [I x Q x 2], weight [I x Q])`` the keypoints are matched against."""
        if self.sparse_cells is None or self.sparse_weight is None:
            return self.cells, self.weight
        return self.sparse_cells, self.sparse_weight


def stack_targets(
    targets: Sequence[AlignTarget], model: AlignModel, cfg: AlignConfig
) -> TargetBatch:
    """Precompute everything pose-independent for a batch of images (see :class:`TargetBatch`)."""
    if not targets:
        raise AlignError("no images to align")
    shapes = {(t.grid.h, t.grid.w) for t in targets}
    if len(shapes) > 1:
        raise AlignError(f"images of one batch need one grid size, got {sorted(shapes)}")
    dev, dt = targets[0].features.device, targets[0].features.dtype
    model = model.to(dev, dt)
    omegas, centers, extents, zbars = [], [], [], []
    for t in targets:
        om = (t.foreground >= cfg.foreground_threshold) & t.grid.valid_cells().to(dev)
        if not bool(om.any()):
            raise AlignError(
                f"{t.name}: empty foreground mask (no cell reaches {cfg.foreground_threshold}); "
                "give a box or another mask source"
            )
        omegas.append(om.flatten())
        s = float(t.grid.side)
        cells = t.grid.cell_centers().to(dev, dt) / s
        sel = cells[om.flatten()]
        half = 0.5 / t.grid.w
        lo, hi = sel.min(0).values - half, sel.max(0).values + half
        centers.append((lo + hi) / 2)
        extents.append((hi - lo).max())
        if cfg.depth_target == "foreground":
            if t.depth is None:
                raise AlignError(f"{t.name}: depth_target 'foreground' needs a depth map")
            zbars.append(t.depth[om].mean())
        else:
            zbars.append(torch.tensor(cfg.depth_target_value, device=dev, dtype=dt))
    if cfg.sparse_cells not in ("foreground", "dilated", "image"):
        raise ValueError(f"unknown sparse_cells {cfg.sparse_cells!r}; expected 'foreground', "
                         "'dilated' or 'image'")
    if cfg.sparse_likelihood == "pixels" and cfg.sparse_cells != "foreground":
        raise ValueError("sparse_likelihood 'pixels' explains every searched cell by a keypoint, "
                         "background included: use it with sparse_cells 'foreground'")
    if not 0 < cfg.background_floor <= 1:
        raise ValueError(f"background_floor must be in (0, 1], got {cfg.background_floor}")
    if cfg.sparse_dilation < 0:
        raise ValueError(f"sparse_dilation is a number of cells >= 0, got {cfg.sparse_dilation}")
    i_n = len(targets)

    def tables(
        sets: list[torch.Tensor], feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded ``(cells [I x M x 2], weight [I x M], log p_sem [I x M x R])`` of each
        image's cell set ``sets[i]`` (``[h*w]`` bool) against ``R`` points ``feats [R x C]``."""
        m_n = max(int(o.sum()) for o in sets)
        cells = torch.zeros(i_n, m_n, 2, device=dev, dtype=dt)
        weight = torch.zeros(i_n, m_n, device=dev, dtype=dt)
        sem = torch.zeros(i_n, m_n, feats.shape[0], device=dev, dtype=dt)
        for i, (t, om) in enumerate(zip(targets, sets, strict=True)):
            p = int(om.sum())
            cells[i, :p] = t.grid.cell_centers().to(dev, dt)[om] / float(t.grid.side)
            weight[i, :p] = 1
            f = t.features.reshape(-1, t.features.shape[-1])[om]
            sem[i, :p] = log_p_sem(similarities(f, feats), mean, std, cfg.p_sem, cfg.sigma_sem)
        return cells, weight, sem

    cells_b, weight, sem_d = tables(omegas, model.dense_features, model.dense_sim_mean,
                                    model.dense_sim_std)
    sparse_sets = omegas
    if cfg.sparse_cells == "image":
        sparse_sets = [t.grid.valid_cells().to(dev).flatten() for t in targets]
    elif cfg.sparse_cells == "dilated":
        r = cfg.sparse_dilation
        sparse_sets = [
            (F.max_pool2d(om.reshape(1, 1, t.grid.h, t.grid.w).float(), 2 * r + 1, 1, r) > 0)
            .flatten() & t.grid.valid_cells().to(dev).flatten()
            for t, om in zip(targets, omegas, strict=True)
        ]
    s_cells, s_weight, sem_s = tables(sparse_sets, model.sparse_features, model.sparse_sim_mean,
                                      model.sparse_sim_std)
    # blurred outwards only: points inside the object are never pulled towards its centre; the
    # floor keeps a soft mask's confident core from paying points for leaving the object's rim
    mask = torch.stack(
        [torch.maximum(t.foreground, smooth(t.foreground, cfg.mask_blur)) for t in targets]
    )[:, None]
    mask = (mask / cfg.background_floor).clamp_max(1)
    offset = torch.tensor(
        [[t.grid.pad[0] / t.grid.side, t.grid.pad[1] / t.grid.side] for t in targets],
        device=dev, dtype=dt,
    )
    principal = torch.tensor(
        [principal_point(t.grid.height, t.grid.width) for t in targets], device=dev, dtype=dt
    )
    depth = None
    if all(t.depth is not None for t in targets):
        depth = torch.stack([t.depth for t in targets])[:, None]
    return TargetBatch(
        names=[t.name for t in targets],
        cells=cells_b,
        weight=weight,
        log_sem_dense=sem_d,
        log_sem_sparse=sem_s,
        mask=mask,
        offset=offset,
        principal=principal,
        center=torch.stack(centers),
        extent=torch.stack(extents),
        z_bar=torch.stack(zbars),
        depth=depth,
        sizes=[(t.grid.height, t.grid.width) for t in targets],
        **({"sparse_cells": s_cells, "sparse_weight": s_weight}
           if cfg.sparse_cells != "foreground" else {}),
    )
