"""The chirality term ``L_chiral`` ([R], method.md §7).

With mirror-symmetric descriptors a pose and its mirror twin (the same cloud reflected in the
object's symmetry plane, left and right labels swapped) explain an image equally well: the
rendered point set is the same and every point's descriptor equals its partner's. Only the
labelled 3D shape can tell them apart, through its handedness. ``L_geom`` carries that signal in
the z-cosines of its triangle+apex relations, but averaged with thousands of reflection-blind
relations, and most z-cosines are near 0 (nearly planar quadruples), so it moves the energy by a
few hundredths. ``L_chiral`` keeps only the relations whose handedness the prior is sure of and
penalises each apex found on the wrong side of its triangle:

``L_chiral = mean_t softplus(-s_t cos_z,t / tau)``,   ``s_t = sign(E[cos_z,t])``,

over the triangle+apex relations ``t`` with ``|E[cos_z,t]| >= min_cos`` under their Beta fits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semalign3d.prior.relations import Tets, tet_features
from semalign3d.prior.shape_prior import ShapePrior


def chiral_relations(prior: ShapePrior, min_cos: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The triangle+apex relations whose apex side the prior is sure of.

    Args:
        prior: the shape prior (its ``tet_ab[:, 2]`` are Beta fits of ``(cos_z + 1) / 2``).
        min_cos: smallest ``|E[cos_z]|`` kept, in (0, 1].
    Returns:
        ``(index [T' x 4] long, sign [T'] float in {-1, +1})``; ``T' = 0`` when none qualify.
    """
    if not 0 < min_cos <= 1:
        raise ValueError(f"chirality_min_cos must be in (0, 1], got {min_cos}")
    ab = prior.tet_ab[:, 2]
    mean_cos = 2 * ab[:, 0] / ab.sum(-1) - 1
    keep = mean_cos.abs() >= min_cos
    return prior.tet_index[keep], mean_cos[keep].sign()


def chirality_loss(
    points: torch.Tensor, index: torch.Tensor | Tets, sign: torch.Tensor, tau: float
) -> torch.Tensor:
    """``L_chiral`` of keypoint clouds.

    Args:
        points: ``[... x K x 3]`` keypoints.
        index: ``[T x 4]`` long ``(t0, t1, t2, v)`` or the same factored (:class:`Tets`);
            sign: ``[T]`` expected sign of ``cos_z``.
        tau: softness of the wrong-side penalty (cosine units).
    Returns:
        ``[...]``; 0 when ``T = 0``. An apex well on its side costs ~0, one in the triangle's
        plane ``log 2``, one mirrored to ``-cos`` about ``cos / tau``.
    """
    lead = points.shape[:-2]
    if len(index) == 0:
        return points.new_zeros(lead)
    cz = tet_features(points.reshape(-1, *points.shape[-2:]), index)[..., 2]
    loss = F.softplus(-sign.to(cz) * cz / tau).mean(-1)
    return loss.reshape(lead)
