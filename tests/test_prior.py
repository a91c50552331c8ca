"""Tests of the 3D object-class representation (issue 5): lifting, focal fit, Beta statistics,
greedy placement, barycentric deformation, k-means, dense cloud, build, file format."""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import pytest
import torch

from semalign3d.config import PriorConfig, replace
from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.geometry import procrustes_align, project
from semalign3d.models.base import DescriptorMap, FeatureGrid
from semalign3d.prior.barycentric import barycentric, dense_from_sparse, inside, tetrahedra
from semalign3d.prior.beta import fit_beta
from semalign3d.prior.build import View, build_representation
from semalign3d.prior.dense import (
    build_dense,
    keypoint_features,
    neighbour_features,
    object_prototypes,
    transfer_points,
)
from semalign3d.prior.focal import (
    fit_focal,
    focal_loss,
    lift_normalized,
    masked_variance,
    triple_features,
    triple_index,
    triple_terms,
)
from semalign3d.prior.kmeans import kmeans
from semalign3d.prior.lifting import (
    LiftingError,
    erode,
    lift_pixels,
    pseudo_depth,
    read_depth,
    snap_to_mask,
)
from semalign3d.prior.relations import (
    EdgePairs,
    Tets,
    edge_pair_features,
    edge_pair_index,
    tet_features,
    tet_index,
)
from semalign3d.prior.representation import ClassRepresentation, RepresentationError
from semalign3d.prior.sparse import place_greedy, refine
from semalign3d.prior.statistics import fit_relations, noisy_copies, shortest_edge

D = torch.float64


def _rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=D))
    return q * torch.linalg.det(q)  # proper rotation


def _shape(k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, 3, generator=g, dtype=D)


# --------------------------------------------------------------------------------- relations
def test_relations_similarity_invariant():
    pts = _shape(6)[None]
    moved = 2.7 * pts @ _rotation(1).T + torch.tensor([0.3, -1.0, 4.0], dtype=D)
    ei, ti = edge_pair_index(6), tet_index(6)
    tol = {"atol": 1e-5, "rtol": 0}  # the 1e-6 denominator stabiliser breaks exactness slightly
    for a, b in zip(edge_pair_features(pts, ei), edge_pair_features(moved, ei), strict=True):
        torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(tet_features(pts, ti), tet_features(moved, ti), **tol)


def test_tet_features_flip_z_under_reflection():
    pts = _shape(5)[None]
    mirrored = pts * torch.tensor([-1.0, 1.0, 1.0], dtype=D)
    ti = tet_index(5)
    a, b = tet_features(pts, ti), tet_features(mirrored, ti)
    torch.testing.assert_close(b[..., 2], -a[..., 2])
    torch.testing.assert_close(b[..., :2], a[..., :2])
    assert a[..., 2].abs().min() > 1e-3  # the test means something: z-cosines are not 0
    ce, re = edge_pair_features(pts, edge_pair_index(5))
    cm, rm = edge_pair_features(mirrored, edge_pair_index(5))
    torch.testing.assert_close((ce, re), (cm, rm))


@pytest.mark.parametrize("grid", [False, True])
def test_relation_features_gradcheck(grid):
    pts = _shape(4).requires_grad_(True)
    ei, ti = EdgePairs.of(edge_pair_index(4), grid), Tets.of(tet_index(4), grid)
    assert torch.autograd.gradcheck(lambda p: edge_pair_features(p[None], ei), (pts,))
    assert torch.autograd.gradcheck(lambda p: tet_features(p[None], ti), (pts,))


@pytest.mark.parametrize("grid", [False, True])
def test_relation_features_equal_a_per_relation_loop(grid):
    # a random subset (not every edge or triangle is shared) against the definitions, one
    # relation at a time
    pts = _shape(7, seed=3)
    g = torch.Generator().manual_seed(0)
    ei = edge_pair_index(7)[torch.randperm(210, generator=g)[:40]]
    ti = tet_index(7)[torch.randperm(140, generator=g)[:40]]
    f = EdgePairs.of(ei, grid)
    assert torch.equal(f.ends[f.pairs].reshape(-1, 4), ei)  # the factoring loses nothing
    assert len(f.ends) < 2 * len(ei)  # and shares edges
    cos, ratio = edge_pair_features(pts[None], f)
    for r, (i, j, k, m) in enumerate(ei.tolist()):
        e1, e2 = pts[i] - pts[j], pts[k] - pts[m]
        torch.testing.assert_close(cos[0, r], e1 @ e2 / (e1.norm() * e2.norm() + 1e-6))
        torch.testing.assert_close(ratio[0, r], e1.norm() / (e1.norm() + e2.norm() + 1e-6))
    unit = lambda w: w / (w.norm() + 1e-6)  # noqa: E731  (the features' stabiliser)
    t = Tets.of(ti, grid)
    assert torch.equal(torch.cat([t.tris[t.pairs[:, 0]], t.apex[t.pairs[:, 1], 1:]], 1), ti)
    feats = tet_features(pts[None], t)
    for r, (t0, t1, t2, v) in enumerate(ti.tolist()):
        x = unit(pts[t1] - pts[t0])
        z = unit(torch.linalg.cross(pts[t1] - pts[t0], pts[t2] - pts[t0]))
        d = unit(pts[v] - pts[t0])
        expect = torch.stack([d @ x, d @ torch.linalg.cross(z, x), d @ z])
        torch.testing.assert_close(feats[0, r], expect)


def test_relation_grids_equal_gathers_and_are_chosen_when_dense():
    pts = _shape(25, seed=4)[None].expand(2, 25, 3).clone().requires_grad_(True)
    ei, ti = edge_pair_index(25), tet_index(25)
    g = torch.Generator().manual_seed(1)
    sub_e, sub_t = (x[torch.randperm(len(x), generator=g)[:2000]] for x in (ei, ti))
    # every relation of 25 keypoints fills the grids densely, the CPU profile's 2000 do not
    assert EdgePairs.of(ei).grid and Tets.of(ti).grid
    assert not EdgePairs.of(sub_e).grid and not Tets.of(sub_t).grid
    for e_idx, t_idx in ((ei, ti), (sub_e, sub_t)):
        out = {}
        for grid in (False, True):
            feats = (
                *edge_pair_features(pts, EdgePairs.of(e_idx, grid)),
                tet_features(pts, Tets.of(t_idx, grid)),
            )
            weights = [torch.linspace(-1, 1, f.numel(), dtype=D).reshape(f.shape) for f in feats]
            loss = sum((w * f).sum() for w, f in zip(weights, feats, strict=True))
            out[grid] = (*feats, torch.autograd.grad(loss, pts)[0])
        for a, b in zip(out[False], out[True], strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_compiled_tet_grid_equals_eager():
    # under torch.compile the z-cosines are read per relation instead of off the k^4 grid
    pts = _shape(9, seed=6)[None].expand(3, 9, 3).clone().requires_grad_(True)
    tets = Tets.of(tet_index(9), grid=True)
    weights = torch.linspace(-1, 1, len(tets) * 3, dtype=D).reshape(len(tets), 3)

    def loss(p):
        feats = tet_features(p, tets)
        return feats, (weights * feats).sum()

    out = {}
    for name, fn in (("eager", loss), ("compiled", torch.compile(loss, fullgraph=True))):
        feats, total = fn(pts)
        out[name] = (feats, torch.autograd.grad(total, pts)[0])
    assert out["eager"][0][..., 2].abs().min() > 1e-3  # z-cosines are not trivially 0
    for a, b in zip(out["eager"], out["compiled"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("grid", [False, True])
def test_relation_features_confine_nan_points(grid):
    # the representation's statistics evaluate samples whose unseen keypoints are NaN
    pts = _shape(6, seed=5)[None].clone()
    pts[0, 2] = float("nan")
    ei, ti = edge_pair_index(6), tet_index(6)
    cos, ratio = edge_pair_features(pts, EdgePairs.of(ei, grid))
    tets = tet_features(pts, Tets.of(ti, grid))
    x_uses = ti[:, [0, 1, 3]]  # the x-cosine does not depend on t2
    for idx, feats in ((ei, cos), (ei, ratio), (x_uses, tets[..., 0]), (ti, tets[..., 1]),
                       (ti, tets[..., 2])):
        involved = (idx == 2).any(1)
        assert feats[0, involved].isnan().all() and feats[0, ~involved].isfinite().all()


def test_relations_of_no_relations_are_empty():
    pts = _shape(4)[None].expand(2, 4, 3)
    cos, ratio = edge_pair_features(pts, torch.zeros(0, 4, dtype=torch.long))
    assert cos.shape == ratio.shape == (2, 0)
    assert tet_features(pts, torch.zeros(0, 4, dtype=torch.long)).shape == (2, 0, 3)


# --------------------------------------------------------------------------------- lifting
def test_pseudo_depth_exact_and_bad_inputs():
    d = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    torch.testing.assert_close(pseudo_depth(d, 0.3), torch.tensor([[1.0, 0.925], [0.85, 0.7]]))
    with pytest.raises(LiftingError, match="img7: disparity map contains NaN"):
        pseudo_depth(torch.tensor([[1.0, float("nan")]]), name="img7")
    with pytest.raises(LiftingError, match="img8: disparity map is constant"):
        pseudo_depth(torch.ones(3, 3), name="img8")
    with pytest.raises(LiftingError, match="maximum"):
        pseudo_depth(-torch.ones(2, 2))


def test_erode_two_by_two_kernel():
    m = torch.zeros(6, 6, dtype=torch.bool)
    m[1:5, 1:5] = True
    one = erode(m, 1)
    expect = torch.zeros(6, 6, dtype=torch.bool)
    expect[2:5, 2:5] = True  # anchor (1, 1): the top/left rim goes
    assert torch.equal(one, expect)
    two = erode(m, 2)
    expect2 = torch.zeros(6, 6, dtype=torch.bool)
    expect2[3:5, 3:5] = True
    assert torch.equal(two, expect2)


def test_snap_to_mask_and_depth():
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[2:7, 2:7] = True  # eroded twice: rows/cols 4..6
    xy = torch.tensor([[0.0, 0.0], [5.0, 5.0], [float("nan"), float("nan")], [7.0, 5.2]])
    out = snap_to_mask(xy, m)
    torch.testing.assert_close(out[0], torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(out[1], torch.tensor([5.0, 5.0]))
    assert torch.isnan(out[2]).all()
    torch.testing.assert_close(out[3], torch.tensor([6.0, 5.0]))
    depth = torch.arange(64.0).reshape(8, 8)
    z = read_depth(depth, out)
    assert z[0] == 36 and z[1] == 45 and torch.isnan(z[2]) and z[3] == 46
    with pytest.raises(LiftingError, match="imgX: object mask is empty"):
        snap_to_mask(xy, torch.zeros(8, 8, dtype=torch.bool), name="imgX")


def test_lift_pixels_inverts_projection():
    pts = torch.tensor([[0.1, -0.2, 2.0], [0.3, 0.1, 3.0]], dtype=D)
    h, w, f = 60, 80, 1.7
    pp = torch.tensor([[0.5, 60 / 160]], dtype=D)
    xy = project(pts[None], torch.tensor([f], dtype=D), pp)[0] * 80
    torch.testing.assert_close(lift_pixels(xy, pts[:, 2], f, h, w), pts)


# --------------------------------------------------------------------------------- focal
def test_masked_variance_exact():
    x = torch.tensor([[1.0, 5.0], [3.0, 7.0], [100.0, 9.0]])
    ok = torch.tensor([[True, True], [True, False], [False, False]])
    torch.testing.assert_close(masked_variance(x, ok), torch.tensor([2.0, 0.0]))


def test_triple_index_count():
    t = triple_index(5)
    assert t.shape == (5 * 6, 3)
    assert (t[:, 1] < t[:, 2]).all() and (t[:, 0] != t[:, 1]).all() and (t[:, 0] != t[:, 2]).all()


def _camera_views(f_true: torch.Tensor, k: int = 8):
    b = f_true.shape[0]
    shape = _shape(k, 3)
    cam = torch.stack([shape @ _rotation(10 + i).T for i in range(b)])
    cam = cam + torch.tensor([0.0, 0.0, 8.0], dtype=D)
    pp = torch.full((b, 2), 0.5, dtype=D)
    return project(cam, f_true, pp), cam[..., 2], pp


def test_focal_fit_recovers_noiseless_focals():
    f_true = torch.tensor([1.5, 2.0, 2.5, 3.0, 1.2, 4.0], dtype=D)
    uv, z, pp = _camera_views(f_true)
    vis = torch.ones(z.shape, dtype=torch.bool)
    f, info = fit_focal(uv, z, pp, vis, 0.2, lr=1e-2, steps=1000)
    torch.testing.assert_close(f, f_true, rtol=1e-2, atol=0)
    assert info["loss_final"] < 1e-3 * info["loss_initial"]


def test_focal_flip_pairs_averaged_and_gradcheck():
    f_true = torch.tensor([2.0, 2.0, 3.0], dtype=D)
    uv, z, pp = _camera_views(f_true, k=5)
    vis = torch.ones(z.shape, dtype=torch.bool)
    vis[2, 0] = False
    f, _ = fit_focal(uv, z, pp, vis, 0.2, 1e-2, 50, flip_pairs=torch.tensor([[0, 2]]))
    assert f[0] == f[2] and f[1] != f[0]
    inv = torch.tensor([0.3, 0.4, 0.5], dtype=D, requires_grad=True)
    terms = triple_terms(uv, z, pp, vis, triple_index(5))
    assert torch.autograd.gradcheck(lambda q: focal_loss(terms, q), (inv,))


def test_focal_loss_equals_explicit_back_projection():
    uv, z, pp = _camera_views(torch.tensor([2.0, 3.0, 2.5], dtype=D), k=6)
    vis = torch.rand(z.shape, generator=torch.Generator().manual_seed(0)) < 0.8
    inv = torch.tensor([0.3, 0.45, 0.2], dtype=D)
    idx = triple_index(6)
    cos, ratio = triple_features(lift_normalized(uv, z, pp, inv), idx)
    ok = vis[:, idx].all(-1)
    expect = masked_variance(cos, ok).sum() + masked_variance(ratio, ok).sum()
    torch.testing.assert_close(focal_loss(triple_terms(uv, z, pp, vis, idx), inv), expect)


# --------------------------------------------------------------------------------- statistics
def test_fit_beta_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a_true = torch.tensor([2.0, 5.0, 1.5, 30.0], dtype=D)
    b_true = torch.tensor([3.0, 1.8, 1.5, 12.0], dtype=D)
    x = torch.distributions.Beta(a_true, b_true).sample((400,)).to(D)
    x = x.clamp(1e-3, 1 - 1e-3)
    a, b, n = fit_beta(x, eps=1e-3)
    assert (n == 400).all()
    for r in range(4):
        sa, sb, _, _ = stats.beta.fit(x[:, r].numpy(), floc=0, fscale=1)
        assert abs(float(a[r]) - sa) / sa < 1e-3 and abs(float(b[r]) - sb) / sb < 1e-3
    del g


def test_noisy_copies_scale():
    pts = torch.tensor([[[0, 0, 0], [1, 0, 0], [0, 3, 0], [float("nan")] * 3]], dtype=D)
    torch.testing.assert_close(shortest_edge(pts), torch.tensor([1.0], dtype=D))
    g = torch.Generator().manual_seed(0)
    c = noisy_copies(pts.expand(200, -1, -1), 10, 0.2, g)
    assert c.shape == (2000, 4, 3) and torch.isnan(c[:, 3]).all()
    std = (c[:, :3] - pts[0, :3]).std()
    assert abs(float(std) - 0.2) < 0.01


def test_fit_relations_filter():
    shape = _shape(5)
    pts = torch.stack([shape @ _rotation(i).T * (1 + 0.1 * i) for i in range(6)])
    pts[:, 4] = float("nan")  # keypoint 4 never seen: its relations have no samples
    prior, counts = fit_relations(noisy_copies(pts, 10, 0.05, torch.Generator().manual_seed(0)))
    assert counts.edges_total == math.comb(math.comb(5, 2), 2)
    assert counts.tets_total == 4 * math.comb(5, 4)
    assert prior.num_edges == math.comb(math.comb(4, 2), 2)  # all of keypoints 0..3 kept
    assert (prior.edge_index < 4).all() and prior.num_tets == 4
    assert (prior.edge_cos_ab > 1).all() and (prior.tet_ab > 1).all()
    few, _ = fit_relations(noisy_copies(pts[:3], 10, 0.05), min_samples=40)
    assert few.num_edges == 0 and few.num_tets == 0  # 30 samples < 40


# --------------------------------------------------------------------------------- sparse
def test_greedy_placement_recovers_shape():
    shape = _shape(7, 5)
    pts = torch.stack([shape @ _rotation(i).T * (1 + 0.2 * i) + i for i in range(8)])
    prior, _ = fit_relations(noisy_copies(pts, 10, 0.05, torch.Generator().manual_seed(0)))
    placed, order = place_greedy(prior, 7, grid=20)
    assert sorted(order) == list(range(7))
    refined, info = refine(placed, prior, steps=300, lr=1e-3)
    assert info["nll_final"] <= info["nll_initial"]
    size = (shape - shape.mean(0)).norm(dim=-1).square().mean().sqrt()
    _, rms = procrustes_align(refined, shape)
    assert rms / size < 0.05


# --------------------------------------------------------------------------------- barycentric
def test_barycentric_coordinates_exact():
    verts = torch.tensor([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=D)
    p = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]], dtype=D)
    b = barycentric(p, verts)
    torch.testing.assert_close(
        b[0, 0], torch.tensor([0.4, 0.1, 0.2, 0.3], dtype=D), atol=1e-6, rtol=0
    )
    assert inside(b).tolist() == [[True], [False]]
    assert tetrahedra(5).shape == (5, 4) and tetrahedra(3).shape == (0, 4)


def test_dense_from_sparse_reproduces_points_and_deforms_linearly():
    sk = _shape(6, 2)
    g = torch.Generator().manual_seed(1)
    w = torch.rand(50, 6, generator=g, dtype=D) ** 3
    pts = (w / w.sum(-1, keepdim=True)) @ sk  # convex combinations: inside the hull
    m, ok = dense_from_sparse(pts, sk, max_elements=64)  # tiny chunks exercise accumulation
    assert ok.all()
    torch.testing.assert_close(m @ sk, pts, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.sum(-1), torch.ones(50, dtype=D))
    moved = sk @ _rotation(3).T * 2 + 1  # a similarity carries every point exactly
    torch.testing.assert_close(m @ moved, pts @ _rotation(3).T * 2 + 1, atol=1e-5, rtol=0)
    far, ok2 = dense_from_sparse(sk.max(0).values[None] * 10, sk)
    assert not ok2.any() and (far == 0).all()


def test_dense_from_sparse_equals_explicit_tet_sum():
    sk = _shape(5, 7)
    pts = torch.stack([sk.mean(0), 0.6 * sk[0] + 0.4 * sk[3], sk[1] * 0.5 + sk.mean(0) * 0.5])
    new = sk + 0.3 * _shape(5, 8)
    m, _ = dense_from_sparse(pts, sk)
    tets = list(itertools.combinations(range(5), 4))
    for n, p in enumerate(pts):
        num, den = torch.zeros(3, dtype=D), 0.0
        for t in tets:
            v = sk[list(t)]
            a = (v[1:] - v[0]).T + 1e-7 * torch.eye(3, dtype=D)
            b123 = torch.linalg.solve(a, p - v[0])
            b = torch.cat([1 - b123.sum()[None], b123])
            if (b >= -0.1).all() and abs(float(b.sum()) - 1) < 0.1:
                wt = 1 / (float((p - v.mean(0)).norm()) + 1e-6)
                num += wt * (b[:, None] * new[list(t)]).sum(0)
                den += wt
        torch.testing.assert_close((m @ new)[n], num / den)


def test_transfer_points_identity_skeleton():
    sk = _shape(6, 4)
    pts = 0.5 * sk[:3].mean(0, keepdim=True) + 0.5 * sk[3:].mean(0, keepdim=True)
    src = sk.clone()
    src[5] = float("nan")  # invisible keypoint: tetrahedra of the other 5 only
    moved, ok = transfer_points(pts, src, sk)
    assert ok.all()
    torch.testing.assert_close(moved, pts)


# --------------------------------------------------------------------------------- k-means, dense
def test_kmeans_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(100, 2, generator=g) for c in centres])
    for init in ("k-means++", "random"):
        c, labels = kmeans(x, 3, iters=50, seed=1, init=init)
        match = torch.cdist(centres, c).argmin(-1)
        assert sorted(match.tolist()) == [0, 1, 2]
        torch.testing.assert_close(c[match], centres, atol=0.1, rtol=0)
        for i in range(3):
            assert (labels[i * 100 : (i + 1) * 100] == match[i]).all()
    c1, _ = kmeans(x, 3, seed=5)
    c2, _ = kmeans(x, 3, seed=5)
    assert torch.equal(c1, c2)
    with pytest.raises(ValueError, match="non-empty"):
        kmeans(torch.zeros(0, 2), 3)


def test_keypoint_and_neighbour_features_exact():
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [5.0, 5.0]]])
    vis = torch.tensor([[True, True], [True, False]])
    phi, mean, std = keypoint_features(f, vis)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(phi, torch.tensor([[s, s], [0.0, 1.0]]))
    torch.testing.assert_close(mean, torch.tensor([s, 1.0]))
    torch.testing.assert_close(std, torch.tensor([0.0, 0.0]))
    pts = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0]])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    dirs = torch.tensor([[0.0, 0, 1], [1.0, 0, 0], [0.0, 1, 0]])
    psi, m2, _, facing = neighbour_features(torch.zeros(1, 3), pts, feats, 2, dirs)
    torch.testing.assert_close(psi, torch.tensor([[s, s]]))
    torch.testing.assert_close(m2, torch.tensor([s]))
    # two neighbours seen along +z and +x: mean direction (0.5, 0, 0.5)
    torch.testing.assert_close(facing, torch.tensor([[0.5, 0.0, 0.5]]))
    assert (neighbour_features(torch.zeros(1, 3), pts, feats, 2)[3] == 0).all()


def test_build_dense_facing_weight_splits_the_two_sides_of_a_sheet():
    # a flat sheet seen from both sides: descriptor e0 from the front (+z), e1 from the back.
    # Position-only k-means mixes the sides; with facing_weight every centre holds one side,
    # with its descriptor and a facing vector of length ~1
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(400, 2, generator=g, dtype=D) - 0.5
    pts = torch.cat([xy, torch.zeros(400, 1, dtype=D)], -1).repeat(2, 1)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=D)
    dirs = torch.cat([up.expand(400, 3), -up.expand(400, 3)])
    feats = torch.eye(2, dtype=torch.float32).repeat_interleave(400, 0)
    cube = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)],
                        dtype=D)
    kw = dict(n_clusters=8, kmeans_iters=10, feature_neighbors=50, density_threshold=0.0,
              directions=dirs)
    mixed = build_dense(pts, feats, cube, **kw)
    split = build_dense(pts, feats, cube, facing_weight=2.0, **kw)
    inner = slice(0, -8)  # the last 8 centres are the keypoint anchors
    assert mixed.facing[inner].norm(dim=-1).max() < 0.5
    assert split.facing[inner].norm(dim=-1).min() > 0.99
    assert split.features[inner].max(-1).values.min() > 0.99  # one side's descriptor each
    side = split.facing[inner, 2].sign()
    assert set(side.tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(split.features[inner].argmax(-1).to(D), (1 - side) / 2)
    with pytest.raises(ValueError, match="facing_weight"):
        build_dense(pts, feats, cube, facing_weight=-1.0, **kw)


def test_object_prototypes_exact():
    """Two separated groups of unit descriptors -> two prototypes: the normalised group means,
    with the members' similarity mean and (n - 1) std, computed by hand."""
    s = 1 / math.sqrt(2)
    f = torch.tensor([[1.0, 0.0, 0.0], [s, s, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    psi, mean, std = object_prototypes(f, 2, seed=0)
    order = psi[:, 2].argsort()  # the x-y group first
    psi, mean, std = psi[order], mean[order], std[order]
    c = math.cos(math.pi / 8)  # the group mean bisects 0 and 45 degrees
    torch.testing.assert_close(psi, torch.tensor([[c, math.sin(math.pi / 8), 0.0],
                                                  [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(mean, torch.tensor([c, 1.0]))
    torch.testing.assert_close(std, torch.tensor([0.0, 0.0]), atol=1e-6, rtol=0)
    # more prototypes than descriptors: one per distinct descriptor, never an empty one
    psi3, _, _ = object_prototypes(f[:2], 5)
    assert psi3.shape == (2, 3)
    with pytest.raises(ValueError, match="non-empty"):
        object_prototypes(f[:0], 2)


# --------------------------------------------------------------------------------- build
def _toy_views(n: int = 12, k: int = 10, seed: int = 0, size=(48, 64), grid: int = 8):
    """An ellipsoid category rendered by ray casting: exact depth (pseudo-depth is the true
    depth up to scale), masks, and descriptors from the object-frame surface point."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.tensor([1.0, 0.6, 0.45], dtype=D)
    d = torch.randn(k, 3, generator=g, dtype=D)
    d[:, 2] = -d[:, 2].abs() - 0.3  # front hemisphere: most keypoints visible in most views
    canon = d / d.norm(dim=-1, keepdim=True) * axes
    h, w = size
    s = max(h, w)
    px, py, f = w / (2 * s), h / (2 * s), 2.0
    yy, xx = torch.meshgrid(torch.arange(h, dtype=D), torch.arange(w, dtype=D), indexing="ij")
    emb = torch.randn(3, 6, generator=g, dtype=D)
    t = torch.tensor([0.0, 0.0, 4.0], dtype=D)
    views = []
    for i in range(n):
        az, el = (i / (n - 1) - 0.5) * 2.0, 0.4 if i % 2 else -0.3
        ca, sa, ce, se = math.cos(az), math.sin(az), math.cos(el), math.sin(el)
        r = torch.tensor([[1, 0, 0], [0, ce, -se], [0, se, ce]], dtype=D) @ torch.tensor(
            [[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]], dtype=D
        )
        dirs = torch.stack([(xx / s - px) / f, (yy / s - py) / f, torch.ones_like(xx)], -1)
        o, dd = (-t) @ r, dirs @ r
        o2, d2 = o / axes, dd / axes
        qa, qb, qc = (d2 * d2).sum(-1), 2 * (d2 * o2).sum(-1), (o2 * o2).sum() - 1
        disc = qb * qb - 4 * qa * qc
        hit = disc > 0
        z = (-qb - disc.clamp_min(0).sqrt()) / (2 * qa)
        cam = canon @ r.T + t
        kps = (f * cam[:, :2] / cam[:, 2:3] + torch.tensor([px, py], dtype=D)) * s
        xi, yi = kps[:, 0].round().long().clamp(0, w - 1), kps[:, 1].round().long().clamp(0, h - 1)
        vis = cam[:, 2] <= torch.where(hit, z, torch.full_like(z, 9.0))[yi, xi] + 0.05
        kps = torch.where(vis[:, None], kps, torch.full_like(kps, float("nan")))
        disp = torch.where(hit, 1 - 0.7 * z / z[hit].min(), torch.zeros_like(z))
        fg = FeatureGrid(h, w, grid, grid)
        cc = fg.cell_centers().round().long()
        cx, cy = cc[:, 0].clamp(0, w - 1), cc[:, 1].clamp(0, h - 1)
        feat = torch.tanh((o + z[cy, cx, None] * dd[cy, cx]) @ emb)
        feat = torch.where(hit[cy, cx, None], feat, torch.ones_like(feat))
        feat = torch.nn.functional.normalize(feat, dim=-1).T.reshape(-1, grid, grid).float()
        rec = AnnotatedImage(
            name=f"toy{i:03d}",
            category="toy",
            path=Path("toy.jpg"),
            width=w,
            height=h,
            bbox=(0.0, 0.0, float(w), float(h)),
            keypoints=kps.float(),
            visible=vis,
        )
        views.append(View(rec, disp.float(), hit, DescriptorMap(feat, fg)))
    return views, canon


FAST = PriorConfig(
    focal_steps=300,
    focal_lr=1e-2,
    placement_grid=16,
    refine_steps=200,
    max_mask_points=600,
    max_points_per_image=200,
    n_clusters=30,
    feature_neighbors=30,
)


@pytest.fixture(scope="module")
def toy_rep():
    views, canon = _toy_views()
    return build_representation(views, FAST, "toy"), views, canon


def test_build_representation_toy(toy_rep):
    rep, views, canon = toy_rep
    rep.validate()
    assert rep.num_keypoints == 10 and rep.num_dense > 10
    assert rep.prior.num_edges > 100 and rep.prior.num_tets > 0
    torch.testing.assert_close(rep.deform_dense(rep.sparse_xyz[None])[0], rep.dense_xyz)
    torch.testing.assert_close(rep.dense_from_sparse.sum(-1), torch.ones(rep.num_dense))
    c = canon[rep.keypoint_ids].float()
    size = (c - c.mean(0)).norm(dim=-1).square().mean().sqrt()
    _, rms = procrustes_align(rep.sparse_xyz, c)
    assert rms / size < 0.08
    focal = torch.tensor(list(rep.meta["focal"].values()))
    assert (focal.median() - 2.0).abs() < 0.3  # exact depth: the true focal 2.0
    assert set(rep.meta["timings_s"]) >= {"focal", "statistics", "dense.cluster"}
    # an ellipsoid's surface points were seen from outside: facing points away from its centre
    outward = rep.dense_xyz - rep.dense_xyz.mean(0)
    agree = ((rep.dense_facing * outward).sum(-1) > 0).float().mean()
    assert agree > 0.8 and (rep.dense_facing.norm(dim=-1) <= 1 + 1e-5).all()
    # each keypoint was seen from the side its anchor in the dense cloud (the last K points,
    # whose facing comes from the surface points around it) was seen from
    k = rep.num_keypoints
    assert rep.sparse_facing.shape == (k, 3)
    cos = torch.nn.functional.cosine_similarity(rep.sparse_facing, rep.dense_facing[-k:], dim=-1)
    assert cos.min() > 0.7
    assert (rep.sparse_facing.norm(dim=-1) <= 1 + 1e-5).all()
    # object prototypes: unit descriptors of the object (the background's are all-ones rows)
    p = rep.object_features
    assert 1 <= p.shape[0] <= 64 and p.shape[1] == rep.sparse_features.shape[1]
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(p.shape[0]))
    assert (rep.object_sim_mean > 0.5).all() and (rep.object_sim_std >= 0).all()


def test_build_without_object_prototypes_keeps_the_dense_cloud(toy_rep):
    """The prototypes draw from their own generator: switching them off changes nothing else."""
    rep, views, _ = toy_rep
    off = build_representation(views, replace(FAST, object_prototypes=0), "toy")
    assert off.object_features.shape[0] == 0
    assert torch.equal(off.dense_xyz, rep.dense_xyz)
    assert torch.equal(off.dense_features, rep.dense_features)


def test_representation_save_load_roundtrip(toy_rep, tmp_path):
    rep = toy_rep[0]
    path = rep.save(tmp_path / "toy.safetensors")
    back = ClassRepresentation.load(path)
    assert back.category == "toy" and back.meta["images_used"] == rep.meta["images_used"]
    assert torch.equal(back.dense_from_sparse, rep.dense_from_sparse)
    assert torch.equal(back.dense_facing, rep.dense_facing)
    assert torch.equal(back.prior.tet_ab, rep.prior.tet_ab)
    assert torch.equal(back.object_features, rep.object_features)
    assert torch.equal(back.sparse_facing, rep.sparse_facing)
    assert torch.equal(back.object_sim_std, rep.object_sim_std)
    import dataclasses

    wrong = dataclasses.replace(rep, object_sim_mean=rep.object_sim_mean[:-1])
    with pytest.raises(RepresentationError, match="object_sim_mean"):
        wrong.validate()
    none = dataclasses.replace(rep, object_features=rep.object_features[:0],
                               object_sim_mean=rep.object_sim_mean[:0],
                               object_sim_std=rep.object_sim_std[:0],
                               sparse_facing=torch.zeros(0, 3))
    none.validate()  # optional parts may be absent
    back_none = ClassRepresentation.load(none.save(tmp_path / "none.safetensors"))
    assert back_none.object_features.shape[0] == 0 and back_none.sparse_facing.shape == (0, 3)
    with pytest.raises(RepresentationError, match="object_sim_std"):
        dataclasses.replace(none, object_sim_std=torch.zeros(2)).validate()
    with pytest.raises(RepresentationError, match="sparse_facing"):
        dataclasses.replace(rep, sparse_facing=torch.zeros(3, 3)).validate()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RepresentationError, match="bad.safetensors"):
        ClassRepresentation.load(bad)
    from safetensors.torch import save_file

    stale = tmp_path / "stale.safetensors"
    save_file({"x": torch.zeros(1)}, str(stale), metadata={"semalign3d": '{"version": 0}'})
    with pytest.raises(RepresentationError, match="rebuild"):
        ClassRepresentation.load(stale)


def _with(view: View, **changes) -> View:
    import dataclasses

    return dataclasses.replace(view, **changes)


def test_build_bad_inputs_skip_and_name_images():
    views, _ = _toy_views()
    few = views[0].record
    few_kps = few.keypoints.clone()
    few_kps[few.visible.nonzero()[3:].flatten()] = float("nan")
    bad = [
        _with(views[0], record=_with_rec(few, few_kps)),
        _with(views[1], disparity=torch.full_like(views[1].disparity, float("nan"))),
        _with(views[2], mask=torch.zeros_like(views[2].mask)),
        _with(views[3], disparity=torch.ones_like(views[3].disparity)),
    ]
    cfg = replace(FAST, n_clusters=10, refine_steps=20, focal_steps=20)
    with pytest.warns(UserWarning, match="toy/toy001"):
        rep = build_representation(bad + views[4:], cfg, "toy")
    skipped = rep.meta["images_skipped"]
    assert set(skipped) == {"toy/toy000", "toy/toy001", "toy/toy002", "toy/toy003"}
    assert "visible keypoints" in skipped["toy/toy000"] and "NaN" in skipped["toy/toy001"]
    assert "empty" in skipped["toy/toy002"] and "constant" in skipped["toy/toy003"]
    rep.validate()
    with pytest.raises(DataError, match="only 3 usable"):
        build_representation(views[4:7], cfg, "toy")


def _with_rec(rec: AnnotatedImage, kps: torch.Tensor) -> AnnotatedImage:
    import dataclasses

    return dataclasses.replace(rec, keypoints=kps, visible=~torch.isnan(kps[:, 0]))


def test_build_warns_on_coplanar_keypoints():
    views, _ = _toy_views()
    flat = views[0].record
    kps = flat.keypoints.clone()
    vis = flat.visible.nonzero().flatten()
    kps[vis] = kps[vis[0]] + torch.arange(len(vis), dtype=torch.float32)[:, None]  # collinear
    views[0] = _with(views[0], record=_with_rec(flat, kps))
    cfg = replace(FAST, n_clusters=10, refine_steps=20, focal_steps=20)
    with pytest.warns(UserWarning, match="toy/toy000"):
        rep = build_representation(views, cfg, "toy")
    assert "toy/toy000" in rep.meta["images_degenerate"]
    assert rep.meta["dense_points_per_image"]["toy/toy000"] == 0
    rep.validate()


# --------------------------------------------------------------------------------- CLI, figure
def test_prior_command_arguments():
    from semalign3d.commands import prior

    p = argparse.ArgumentParser()
    prior.add_arguments(p)
    a = p.parse_args(["build", "--root", "R", "--category", "cow", "--out", "x.safetensors"])
    assert a.prior_command == "build" and a.encoder is None and a.root == "R"
    with pytest.raises(SystemExit):
        p.parse_args(["build", "--root", "R"])


def test_plot_representation(toy_rep, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from semalign3d.prior.figures import pca_colors, plot_representation

    ax = plot_representation(toy_rep[0], skeleton=True)
    assert len(ax.texts) == toy_rep[0].num_keypoints
    ax.figure.savefig(tmp_path / "rep.png")
    c = pca_colors(toy_rep[0].dense_features)
    assert c.shape == (toy_rep[0].num_dense, 3) and c.min() >= 0 and c.max() <= 1


# --------------------------------------------------------------------------------- real data
def test_real_spair_keypoints_lift_with_flips(spair_mini):
    from semalign3d.data.flips import flip_image
    from semalign3d.data.spair import SPairDataset

    ds = SPairDataset(spair_mini)
    name = ds.split_image_names("test", "cow")[0]
    rec = ds.image("cow", name)
    box = torch.zeros(rec.height, rec.width, dtype=torch.bool)
    x0, y0, x1, y1 = (int(v) for v in rec.bbox)
    box[y0 : y1 + 1, x0 : x1 + 1] = True
    for r in (rec, flip_image(rec)):
        m = box if not r.flipped else box.flip(-1)
        snapped = snap_to_mask(r.keypoints, m, name=r.key)
        assert torch.equal(torch.isnan(snapped[:, 0]), ~r.visible)
        xi, yi = snapped[r.visible].long().unbind(-1)
        assert m[yi, xi].all()
        kx, ky = r.keypoints[:, 0], r.keypoints[:, 1]
        bx0, _, bx1, _ = r.bbox
        deep = r.visible & (kx > bx0 + 3) & (kx < bx1 - 3) & (ky > y0 + 3) & (ky < y1 - 3)
        assert deep.any() and torch.equal(snapped[deep], r.keypoints[deep].round())
        z = torch.full((r.height, r.width), 0.8)
        pts = lift_pixels(snapped, read_depth(z, snapped), 2.0, r.height, r.width)
        assert torch.isfinite(pts[r.visible]).all() and torch.isnan(pts[~r.visible]).all()
