"""Starting poses fitted to the image (semalign3d.align.fitted_starts)."""

from __future__ import annotations

import math

import pytest
import torch

from semalign3d.align.fitted_starts import (
    fit_in_plane,
    geodesic_angle,
    match_cells,
    select_diverse,
)
from semalign3d.align.hypotheses import initial_hypotheses, random_rotations
from semalign3d.align.model import prepare_model
from semalign3d.align.target import TargetBatch, make_target, stack_targets
from semalign3d.align.toy import render, toy_representation
from semalign3d.config import AlignConfig, replace
from semalign3d.geometry import similarity_fit
from semalign3d.models.base import DescriptorMap

D = torch.float64


def _rot_z(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=D)


def _tables(cells, log_sem, weight=None) -> TargetBatch:
    """A batch with only the tables the fit reads (cells, weight, log_sem_sparse)."""
    i_n, p_n = cells.shape[:2]
    w = torch.ones(i_n, p_n, dtype=D) if weight is None else weight
    z = torch.zeros(i_n, dtype=D)
    return TargetBatch(["x"] * i_n, cells, w, log_sem, log_sem, torch.zeros(i_n, 1, 2, 2),
                       torch.zeros(i_n, 2, dtype=D), z, z, z, z, None, [(1, 1)] * i_n)


def test_match_cells_hand_computed():
    cells = torch.tensor([[[0.0, 0.0], [0.3, 0.0], [0.9, 0.9]]], dtype=D)
    log_sem = torch.tensor([[[-1.0], [-2.0], [0.0]]], dtype=D)
    pts = torch.tensor([[[[0.2, 0.0]]]], dtype=D)  # I = J = K = 1
    m, ll = match_cells(pts, cells, torch.ones(1, 3, dtype=D), log_sem, 0.1)
    # cell 0: -1 - 0.04 / 0.02 = -3; cell 1: -2 - 0.01 / 0.02 = -2.5; cell 2: -(0.49+0.81)/0.02
    assert m[0, 0, 0].tolist() == [0.3, 0.0] and ll.item() == pytest.approx(-2.5)
    # padding cells are never matched, however good their likelihood
    w = torch.tensor([[1.0, 0.0, 1.0]], dtype=D)
    m, ll = match_cells(pts, cells, w, log_sem, 0.1)
    assert m[0, 0, 0].tolist() == [0.0, 0.0] and ll.item() == pytest.approx(-3.0)


def test_fit_in_plane_recovers_a_similarity():
    """Each keypoint's evidence sits on one cell: the first ICP round finds the exact similarity
    (the second keeps it)."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 2, generator=g, dtype=D) - 0.5  # [K x 2]
    ang = math.radians(70)
    r = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=D)
    truth = 0.4 * p @ r.T + torch.tensor([0.5, 0.45], dtype=D)
    clutter = torch.rand(10, 2, generator=g, dtype=D)
    cells = torch.cat([truth, clutter])[None]  # [1 x 16 x 2]
    log_sem = torch.full((1, 16, 6), -50.0, dtype=D)
    log_sem[0, torch.arange(6), torch.arange(6)] = 0.0
    batch = _tables(cells, log_sem)
    s, rot, t = fit_in_plane(p[None], torch.full((1, 1), 0.5, dtype=D),
                             torch.zeros(1, 1, 2, dtype=D), batch, 0.5, 2)
    assert s.item() == pytest.approx(0.4) and torch.allclose(rot[0, 0], r)
    assert t[0, 0].tolist() == pytest.approx([0.5, 0.45])
    # from any starting scale: the fit is not bounded by the box fit (a bound measured worse)
    s, rot, _ = fit_in_plane(p[None], torch.full((1, 1), 3.0, dtype=D),
                             torch.zeros(1, 1, 2, dtype=D), batch, 0.5, 1)
    assert s.item() == pytest.approx(0.4) and torch.allclose(rot[0, 0], r)
    # zero rounds: the starting similarity untouched
    s0, rot0, t0 = fit_in_plane(p[None], torch.ones(1, 1, dtype=D),
                                torch.zeros(1, 1, 2, dtype=D), batch, 0.5, 0)
    assert s0.item() == 1.0 and torch.equal(rot0[0, 0], torch.eye(2, dtype=D))


def test_geodesic_angle_and_diverse_selection():
    rots = torch.stack([_rot_z(a) for a in (0.0, 10.0, 50.0, 100.0)])[None]
    assert geodesic_angle(rots[0, 3], rots[0, 0]).item() == pytest.approx(100.0)
    assert geodesic_angle(rots[0, 1], rots[0, 1]).item() == pytest.approx(0.0, abs=1e-5)
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    # 10 degrees from the best is suppressed; when too few are far apart it comes back last
    assert select_diverse(scores, rots, 3, 30.0).tolist() == [[0, 2, 3]]
    assert select_diverse(scores, rots, 4, 30.0).tolist() == [[0, 2, 3, 1]]
    assert select_diverse(scores, rots, 2, 0.0).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="keep 5 of 4"):
        select_diverse(scores, rots, 5, 30.0)


@pytest.fixture(scope="module")
def toy_field():
    return toy_representation(n_dense=120, channels=16, seed=0)


def _toy_batch(rep, field, seed, cfg):
    view = render(field, random_rotations(1, seed)[0], torch.tensor([0.01, 0.0, 1.0], dtype=D),
                  grid=24, seed=1)
    model = prepare_model(rep, cfg).to(dtype=torch.float32)
    desc = DescriptorMap(view.descriptors.features.float(), view.descriptors.grid)
    target = make_target("toy", desc, model, cfg, mask=view.mask)
    return view, model, stack_targets([target], model, cfg)


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_fitted_starts_are_closer_than_cube_starts(toy_field, seed):
    """On a rendered toy view the fitted starts land nearer the true rotation than the cube
    rotations do."""
    rep, field = toy_field
    cfg = replace(AlignConfig(), n_rotations=8, n_fitted_starts=4, schedule_skip=0.0)
    view, model, batch = _toy_batch(rep, field, seed, cfg)
    h = initial_hypotheses(batch, model, cfg)
    assert h.keypoints.shape == (1, 12, 8, 3) and h.fitted.tolist() == [False] * 8 + [True] * 4
    _, r, _ = similarity_fit(h.keypoints[0], view.keypoints.float().expand(12, 8, 3))
    err = geodesic_angle(r, torch.eye(3))
    assert err[h.fitted].min() < err[~h.fitted].min() - 10, err
    # the fitted starts sit at the gauge depth and are proper copies of the canonical cloud
    assert torch.allclose(h.keypoints[0, 8:, :, 2].mean(-1), torch.ones(4), atol=0.05)
    assert not bool(h.mirrored.any())
    # pairwise at least fit_min_angle apart
    fr = h.rotations[0, 8:]
    ang = geodesic_angle(fr[:, None], fr[None])
    assert bool((ang + 1e3 * torch.eye(4) >= cfg.fit_min_angle - 1e-3).all())


def test_fitted_only_and_no_hypotheses(toy_field):
    rep, field = toy_field
    cfg = replace(AlignConfig(), n_rotations=0, n_fitted_starts=2, mirror_hypotheses=True)
    _, model, batch = _toy_batch(rep, field, 7, cfg)
    h = initial_hypotheses(batch, model, cfg)
    assert h.keypoints.shape == (1, 2, 8, 3) and bool(h.fitted.all())
    with pytest.raises(ValueError, match="at least one hypothesis"):
        initial_hypotheses(batch, model, replace(cfg, n_fitted_starts=0))
    # uninformed starts must not skip the coarse phase
    with pytest.raises(ValueError, match="schedule_skip: 0"):
        initial_hypotheses(batch, model, replace(cfg, n_rotations=4, schedule_skip=0.75))


def test_lift_places_the_box_fit_on_the_object(toy_field):
    """Without ICP rounds a fitted start is the box fit, lifted to 3D: its projected dense cloud
    spans the object's box around the box's centre, at the gauge depth."""
    from semalign3d.align.energy import project

    rep, field = toy_field
    cfg = replace(AlignConfig(), n_fitted_starts=3, fit_iterations=0)
    _, model, batch = _toy_batch(rep, field, 3, cfg)
    h = initial_hypotheses(batch, model, cfg)
    pd_ = project(model.deform(h.keypoints), 1 / h.focal_inv, batch.principal)
    span = (pd_.amax(-2) - pd_.amin(-2)).amax(-1)
    mid = (pd_.amax(-2) + pd_.amin(-2)) / 2
    assert torch.allclose(span, batch.extent.expand(1, 3), rtol=0.1)
    assert torch.allclose(mid, batch.center[:, None].expand(1, 3, 2), atol=0.02)
    assert torch.allclose(h.keypoints[..., 2].mean(-1), torch.ones(1, 3), atol=1e-4)


@pytest.mark.parametrize("cells", ["foreground", "dilated"])
def test_fitted_starts_do_not_depend_on_the_batch(toy_field, cells):
    """Two images of different foreground size (padded cells) in one batch get the starts each
    gets alone, whichever cells the keypoints are matched to ('image' has no padding here: the
    two images have the same size)."""
    rep, field = toy_field
    cfg = replace(AlignConfig(), n_fitted_starts=2, sparse_cells=cells)
    va, model, _ = _toy_batch(rep, field, 3, cfg)
    vb = render(field, random_rotations(1, 5)[0], torch.tensor([0.0, 0.01, 1.4], dtype=D),
                grid=24, seed=2)
    targets = [make_target(n, DescriptorMap(v.descriptors.features.float(), v.descriptors.grid),
                           model, cfg, mask=v.mask) for n, v in (("a", va), ("b", vb))]
    both = stack_targets(targets, model, cfg)
    assert int(both.weight[0].sum()) != int(both.weight[1].sum())  # one of them is padded
    sw = both.sparse_omega[1]
    assert int(sw[0].sum()) != int(sw[1].sum())  # so is one keypoint table
    h = initial_hypotheses(both, model, cfg)
    for i, t in enumerate(targets):
        alone = initial_hypotheses(stack_targets([t], model, cfg), model, cfg)
        torch.testing.assert_close(h.keypoints[i], alone.keypoints[0])


def test_place_hand_computed():
    """a = 0.5, b = (0.3, 0.2) at z = 2, f = 4, principal (0.5, 0.5): s = 0.25 and
    t_xy = (b - pp) z / f = (-0.1, -0.15); the pinhole image of the points is a p + b."""
    from semalign3d.align.placement import box_fit, place

    batch = _tables(torch.zeros(1, 1, 2, dtype=D), torch.zeros(1, 1, 2, dtype=D))
    batch = TargetBatch(batch.names, batch.cells, batch.weight, batch.log_sem_dense,
                        batch.log_sem_sparse, batch.mask, batch.offset,
                        torch.tensor([[0.5, 0.5]], dtype=D), torch.tensor([[0.4, 0.6]], dtype=D),
                        torch.tensor([0.2], dtype=D), torch.tensor([2.0], dtype=D), None,
                        batch.sizes)
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=D)
    cam = place(x, torch.eye(3, dtype=D)[None, None], torch.tensor([[0.5]], dtype=D),
                torch.tensor([[[0.3, 0.2]]], dtype=D), batch, 4.0)
    torch.testing.assert_close(cam[0, 0], torch.tensor([[-0.1, -0.15, 2.0], [0.15, -0.15, 2.0]],
                                                        dtype=D))
    uv = 4.0 * cam[0, 0, :, :2] / cam[0, 0, :, 2:] + 0.5
    torch.testing.assert_close(uv, torch.tensor([[0.3, 0.2], [0.8, 0.2]], dtype=D))
    # the box fit: a cloud spanning 2 units is scaled to the box's extent 0.2, centred on it
    a, b = box_fit(torch.tensor([[[-1.0, 0.0, 0.0], [1.0, 0.5, 0.0]]], dtype=D), batch)
    assert a.item() == pytest.approx(0.1) and b[0, 0].tolist() == pytest.approx([0.4, 0.575])
