"""The alignment energy, Eq. 13 (method.md §2.11):

``L_align = w_dense L_dense(sigma_dense) + w_sparse L_sparse(sigma_sparse)      (Eq. 9)
          + w_geom L_geom + w_background L_background + w_depth L_depth
          (+ w_order L_order + w_chirality L_chiral, our mirror-twin breakers)``

Every sigma and weight follows the category's Table 5 schedule; :func:`schedule_tables`
evaluates them once for all steps so the loop only indexes tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semalign3d.align.background import background_loss
from semalign3d.align.chirality import chirality_loss
from semalign3d.align.depth_gauge import depth_gauge, depth_order_loss
from semalign3d.align.model import AlignModel
from semalign3d.align.reconstruction import nll
from semalign3d.align.target import TargetBatch
from semalign3d.align.visibility import log_facing, log_visibility
from semalign3d.config import AlignConfig
from semalign3d.prior.shape_prior import geometric_nll

#: energy terms in the order of Eq. 13; ``order`` and ``chirality`` are ours, weighted by the
#: constants ``cfg.w_depth_order`` and ``cfg.w_chirality``
TERMS = ("dense", "sparse", "geom", "background", "depth", "order", "chirality")
#: schedule names: the two sigmas, then one weight per term
SCHEDULES = ("sigma_dense", "sigma_sparse", "w_dense", "w_sparse", "w_geom", "w_background",
             "w_depth", "w_order", "w_chirality")


@dataclass(frozen=True)
class ScheduleTables:
    """``[T x len(SCHEDULES)]`` values of :data:`SCHEDULES` at every step ``0 .. T-1``."""

    values: torch.Tensor

    def at(self, step: int) -> dict[str, float]:
        """The schedule values used at ``step`` (for logs and tests)."""
        return {n: float(v) for n, v in zip(SCHEDULES, self.values[step], strict=True)}


def schedule_tables(
    cfg: AlignConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> ScheduleTables:
    """Evaluate every Table 5 schedule at every step, once (from ``cfg.schedule_skip`` of the
    way in, stretched over the steps)."""
    if not 0 <= cfg.schedule_skip < 1:
        raise ValueError(f"schedule_skip is a fraction in [0, 1), got {cfg.schedule_skip}")
    start = cfg.schedule_skip * cfg.n_steps
    cols = [getattr(cfg, n).table(cfg.n_steps, start) for n in SCHEDULES[:-2]]
    cols += [[cfg.w_depth_order] * cfg.n_steps, [cfg.w_chirality] * cfg.n_steps]
    # contiguous rows: a compiled energy guards on the stride of the row it is given
    vals = torch.tensor(cols, dtype=dtype or torch.float32, device=device).T.contiguous()
    return ScheduleTables(vals.reshape(cfg.n_steps, len(SCHEDULES)))


def project(points: torch.Tensor, focal: torch.Tensor, principal: torch.Tensor) -> torch.Tensor:
    """Pinhole projection of hypotheses: ``[I x H x M x 3]``, ``[I x H]``, ``[I x 2]`` ->
    ``[I x H x M x 2]``. Depth is clamped at 1e-3 so a point crossing the camera plane stays
    finite."""
    z = points[..., 2:3].clamp_min(1e-3)
    return focal[..., None, None] * points[..., :2] / z + principal[:, None, None, :]


def energy_terms(
    keypoints: torch.Tensor,
    focal: torch.Tensor,
    batch: TargetBatch,
    model: AlignModel,
    sigma_dense: torch.Tensor | float,
    sigma_sparse: torch.Tensor | float,
    cfg: AlignConfig,
) -> dict[str, torch.Tensor]:
    """Every term of Eq. 13 for every hypothesis.

    Args:
        keypoints: ``[I x H x K x 3]`` camera-frame keypoints (``I`` images x ``H`` hypotheses).
        focal: ``[I x H]`` focal lengths (normalised units).
        batch: the images' precomputed tables.
        model: the category model.
        sigma_dense, sigma_sparse: current spatial widths.
        cfg: variants (``dense_likelihood``, ``sparse_likelihood``, ``log_eps``, ...).
    Returns:
        ``{term: [I x H]}`` for :data:`TERMS` (``order`` is 0 without depth maps,
        ``chirality`` 0 when ``cfg.w_chirality`` is 0).
    """
    if keypoints.shape[-2] != model.num_keypoints:
        raise ValueError(
            f"hypotheses have {keypoints.shape[-2]} keypoints, the model {model.num_keypoints}"
        )
    dense = model.deform(keypoints)
    proj_d = project(dense, focal, batch.principal)
    proj_s = project(keypoints, focal, batch.principal)
    log_vis = log_vis_s = None
    if cfg.visibility_radius > 0:
        # keypoints are occluded by the surface (dense points), so both are tested together
        n = dense.shape[-2]
        lv = log_visibility(torch.cat([dense, keypoints], -2), torch.cat([proj_d, proj_s], -2),
                            cfg.visibility_radius)
        log_vis, log_vis_s = lv[..., :n], lv[..., n:]
    if cfg.facing_tau > 0 and model.dense_facing is not None:
        lf = log_facing(dense, keypoints, model.sparse_xyz, model.dense_facing, cfg.facing_tau)
        log_vis = lf if log_vis is None else log_vis + lf
    if cfg.facing_tau > 0 and model.sparse_facing is not None:
        lf = log_facing(keypoints, keypoints, model.sparse_xyz, model.sparse_facing, cfg.facing_tau)
        log_vis_s = lf if log_vis_s is None else log_vis_s + lf
    eps = cfg.log_eps
    s_cells, s_weight = batch.sparse_omega
    terms = {
        "dense": nll(cfg.dense_likelihood, proj_d, batch.cells, batch.weight,
                     batch.log_sem_dense, sigma_dense, eps, log_vis),
        "sparse": nll(cfg.sparse_likelihood, proj_s, s_cells, s_weight,
                      batch.log_sem_sparse, sigma_sparse, eps, log_vis_s),
        "geom": geometric_nll(keypoints.flatten(0, 1), model.prior).reshape(focal.shape),
        "background": background_loss(proj_d, batch.mask, batch.offset),
        "depth": depth_gauge(keypoints, batch.z_bar),
    }
    if batch.depth is not None and cfg.w_depth_order > 0:
        # occluded and back-facing points do not vote on the depth order either
        vis = None if log_vis is None else log_vis.exp()
        terms["order"] = depth_order_loss(dense, proj_d, batch.depth, batch.mask, batch.offset,
                                          vis, cfg.depth_order_form)
    else:
        terms["order"] = torch.zeros_like(focal)
    terms["chirality"] = (
        chirality_loss(keypoints, model.chiral, model.chiral_sign, cfg.chirality_tau)
        if cfg.w_chirality > 0 else torch.zeros_like(focal)
    )
    return terms


def total_energy(terms: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Eq. 13: ``sum_t w_t L_t`` with ``weights`` = the 7 weight columns of a schedule row
    (``[7]``, in :data:`TERMS` order). Returns ``[I x H]``."""
    return sum(weights[i] * terms[name] for i, name in enumerate(TERMS))
