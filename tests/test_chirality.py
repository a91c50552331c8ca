"""The chirality term L_chiral (semalign3d.align.chirality)."""

from __future__ import annotations

import math

import pytest
import torch

from semalign3d.align.chirality import chiral_relations, chirality_loss
from semalign3d.align.energy import energy_terms
from semalign3d.align.model import prepare_model
from semalign3d.align.target import make_target, stack_targets
from semalign3d.align.toy import toy_representation
from semalign3d.config import AlignConfig, replace
from semalign3d.models.base import DescriptorMap, FeatureGrid
from semalign3d.prior.shape_prior import ShapePrior

D = torch.float64
#: a right-handed corner: apex 3 sits on +z of triangle (0, 1, 2), cos_z = 1
CORNER = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=D)
MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=D))


def _prior(tet_z_ab: list[tuple[float, float]]) -> ShapePrior:
    t = len(tet_z_ab)
    ab = torch.full((t, 3, 2), 2.0, dtype=D)
    ab[:, 2] = torch.tensor(tet_z_ab, dtype=D)
    return ShapePrior(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 2, dtype=D),
                      torch.zeros(0, 2, dtype=D), torch.tensor([[0, 1, 2, 3]] * t), ab)


def test_selection_keeps_confident_tets_with_their_sign():
    # Beta means 0.9, 0.1, 0.55 -> E[cos_z] = +0.8, -0.8, +0.1
    index, sign = chiral_relations(_prior([(9.0, 1.0), (1.0, 9.0), (5.5, 4.5)]), 0.3)
    assert index.shape == (2, 4) and sign.tolist() == [1.0, -1.0]
    index, sign = chiral_relations(_prior([(5.5, 4.5)]), 0.3)
    assert index.shape == (0, 4) and sign.shape == (0,)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_selection_rejects_bad_threshold(bad):
    with pytest.raises(ValueError, match="chirality_min_cos"):
        chiral_relations(_prior([(9.0, 1.0)]), bad)


def test_exact_values_corner_and_its_mirror():
    index, sign = torch.tensor([[0, 1, 2, 3]]), torch.tensor([1.0], dtype=D)
    tau = 0.1
    right = chirality_loss(CORNER[None], index, sign, tau)
    left = chirality_loss((CORNER @ MIRROR)[None], index, sign, tau)
    flat = chirality_loss(CORNER.clone().index_put_((torch.tensor([3]), torch.tensor([2])),
                                                    torch.tensor([0.0], dtype=D))[None],
                          index, sign, tau)
    # cos_z = +1 -> softplus(-10); -1 -> softplus(10); apex in the plane -> log 2
    # (rel 1e-4: the features normalise with a 1e-6 guard)
    assert right.item() == pytest.approx(math.log1p(math.exp(-10)), rel=1e-4)
    assert left.item() == pytest.approx(10 + math.log1p(math.exp(-10)), rel=1e-4)
    assert flat.item() == pytest.approx(math.log(2), rel=1e-5)


def test_invariant_to_similarity_and_flipped_by_reflection():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(6, 3, generator=g, dtype=D)
    index = torch.tensor([[0, 1, 2, 3], [1, 2, 4, 5], [0, 3, 4, 5]])
    sign = torch.tensor([1.0, -1.0, 1.0], dtype=D)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=D))
    q = q * torch.det(q)  # proper rotation
    moved = 2.5 * pts @ q.T + torch.tensor([0.3, -1.0, 4.0], dtype=D)
    base = chirality_loss(pts[None], index, sign, 0.05)
    assert chirality_loss(moved[None], index, sign, 0.05).item() == pytest.approx(base.item(),
                                                                                   rel=1e-5)
    # a reflection is the same as flipping every expected sign
    assert chirality_loss((pts @ MIRROR)[None], index, sign, 0.05).item() == pytest.approx(
        chirality_loss(pts[None], index, -sign, 0.05).item(), rel=1e-6)


def test_batch_shapes_and_empty_relations():
    pts = torch.randn(2, 3, 5, 3, dtype=D)
    index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    out = chirality_loss(pts, index, torch.ones(2, dtype=D), 0.05)
    assert out.shape == (2, 3)
    assert out[1, 2].item() == pytest.approx(
        chirality_loss(pts[1, 2][None], index, torch.ones(2, dtype=D), 0.05).item())
    empty = chirality_loss(pts, torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=D), 0.05)
    assert empty.shape == (2, 3) and (empty == 0).all()


def test_gradcheck_float64():
    pts = (CORNER + 0.1 * torch.randn(4, 3, dtype=D)).repeat(2, 1, 1)
    pts = torch.cat([pts, torch.randn(2, 2, 3, dtype=D)], 1).requires_grad_(True)
    index = torch.tensor([[0, 1, 2, 3], [2, 4, 5, 0]])
    sign = torch.tensor([1.0, -1.0], dtype=D)
    assert torch.autograd.gradcheck(lambda p: chirality_loss(p, index, sign, 0.2), (pts,))


def test_energy_term_separates_the_mirror_twin():
    """On the toy class the prior's chirality tells the cloud from its reflection; with
    ``w_chirality = 0`` the term is not computed."""
    rep, _ = toy_representation(n_dense=60, channels=8, seed=0)
    cfg = AlignConfig()
    model = prepare_model(rep, cfg).to(dtype=D)
    assert len(model.chiral_sign) > 0
    kps = rep.sparse_xyz.to(D) + torch.tensor([0.0, 0.0, 2.0], dtype=D)
    twin = kps @ MIRROR
    chi = chirality_loss(torch.stack([kps, twin]), model.chiral_index, model.chiral_sign,
                         cfg.chirality_tau)
    assert chi[0] < 0.1 * chi[1]
    off = prepare_model(rep, replace(cfg, w_chirality=0.0))
    grid = FeatureGrid(64, 64, 8, 8)
    desc = DescriptorMap(torch.nn.functional.normalize(torch.randn(8, 8, 8), dim=-1), grid)
    batch = stack_targets([make_target("t", desc, off, cfg, mask=torch.ones(64, 64))], off, cfg)
    terms = energy_terms(kps.float()[None, None], torch.tensor([[3.0]]), batch, off, 0.1, 0.1,
                         replace(cfg, w_chirality=0.0))
    assert terms["chirality"].item() == 0.0
