"""The synthetic object-class dataset, the oracle encoder and the simulated depth model."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import spearmanr

from semalign3d.cli import main as cli_main
from semalign3d.data import flips
from semalign3d.data.records import DataError
from semalign3d.data.spair import SPairDataset, load_mask, load_rgb
from semalign3d.data.synthetic import camera as cam_mod
from semalign3d.data.synthetic import generate as gen
from semalign3d.data.synthetic import render, shapes
from semalign3d.data.synthetic.primitives import MIRROR, Primitive
from semalign3d.evaluate import correct_keypoints
from semalign3d.geometry import project
from semalign3d.match import nn_match
from semalign3d.models.base import FeatureGrid
from semalign3d.models.oracle import OracleEncoder, category_embedding, embed, oracle_descriptors
from semalign3d.models.synthetic_depth import SyntheticDepth

CATS = ("aeroplane", "bottle", "chair", "tvmonitor")
TINY = gen.SynthConfig(
    categories=CATS,
    seed=3,
    n_train=4,
    n_val=1,
    n_test=5,
    n_trn_pairs=8,
    n_val_pairs=2,
    n_test_pairs=12,
    camera=cam_mod.CameraRanges(long_side=(150, 190)),
    oracle_resolution=120,
    mean_samples=16,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one torch thread is fastest, and immune to a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("synth") / "a"
    gen.generate_dataset(r, TINY, progress=False)
    return r


@pytest.fixture(scope="session")
def ds(root) -> SPairDataset:
    return SPairDataset(root)


def _scene(category: str, index: int) -> gen.Scene:
    name, split = gen.image_names(TINY, category)[index]
    return gen.make_scene(TINY, category, index, name, split)


# ------------------------------------------------------------------------------ primitives
def test_box_ray_hit_is_exact():
    box = Primitive("box", np.zeros(3), np.eye(3), (1, 1, 1, 1, 0, 0, 2), part=0)
    t, n, ell = box.intersect(
        torch.tensor([0.25, 0.0, -3.0], dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64),
    )
    assert t[0].item() == pytest.approx(3.0)
    assert n[0].tolist() == pytest.approx([0.0, 0.0, -1.0])
    assert ell[0].tolist() == pytest.approx([0.25, 0.0, 0.0])
    assert math.isinf(t[1].item())  # parallel to the box, outside it


def test_frustum_and_ellipsoid_hits_are_exact():
    cone = Primitive("frustum", np.zeros(3), np.eye(3), (1.0, 0.5, 1.0), part=0)
    t, n, ell = cone.intersect(
        torch.tensor([-3.0, 0.0, 0.5], dtype=torch.float64),
        torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64),
    )
    # radius at half height is 0.75; outward normal of the side is (-1, 0, 0.5) normalised
    assert t.item() == pytest.approx(2.25)
    assert n[0].tolist() == pytest.approx([-2 / math.sqrt(5), 0.0, 1 / math.sqrt(5)])
    assert ell[0].tolist() == pytest.approx([-1.0, 0.0, 0.5])
    t, n, _ = cone.intersect(
        torch.tensor([0.2, 0.1, -2.0], dtype=torch.float64),
        torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64),
    )
    assert t.item() == pytest.approx(2.0) and n[0].tolist() == pytest.approx([0, 0, -1.0])
    ell_ = Primitive("ellipsoid", np.array([0.0, 0, 1]), np.eye(3), (1.0, 2.0, 3.0), part=0)
    t, n, ell = ell_.intersect(
        torch.tensor([0.0, 5.0, 1.0], dtype=torch.float64),
        torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64),
    )
    assert t.item() == pytest.approx(3.0)
    assert n[0].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert ell[0].tolist() == pytest.approx([0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    "kind,size",
    [
        ("box", (0.3, 0.2, 0.1, 0.15, 0.05, -0.02, 0.7)),
        ("frustum", (0.4, 0.2, 0.9)),
        ("ellipsoid", (0.3, 0.5, 0.2)),
    ],
)
def test_local_coordinates_round_trip_and_mirror(kind, size):
    rng = np.random.default_rng(0)
    frame = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    p = Primitive(kind, rng.normal(size=3), frame, size, part=0)
    ell = torch.tensor(rng.uniform([-0.9, -0.9, 0.05], [0.9, 0.9, 0.95], (50, 3)))
    if kind == "frustum":
        ell[:, :2] *= 0.7  # inside the unit disc
    if kind == "ellipsoid":
        ell = ell / ell.norm(dim=-1, keepdim=True) * 0.9
    pts = p.point(ell)
    assert torch.allclose(p.local(pts), ell, atol=1e-10)
    m = p.mirrored()
    assert torch.allclose(m.point(ell), pts @ torch.from_numpy(MIRROR), atol=1e-12)
    assert bool(p.contains(pts).all()) and not bool(p.contains(pts + 10.0).any())


def test_sampled_surface_points_lie_on_their_primitive():
    inst = shapes.family("chair").template()
    s = inst.sample_surface(2000, np.random.default_rng(0))
    assert 1000 < len(s["points"]) <= 2000
    for i, p in enumerate(inst.primitives):
        m = s["prim"] == i
        assert torch.allclose(p.point(s["ell"][m]), s["points"][m], atol=1e-9)
        assert not bool(p.contains(s["points"][m], shrink=1e-6).any())  # on, not in, the solid


# ------------------------------------------------------------------------------ shape families
@pytest.mark.parametrize("category", CATS)
def test_families_match_spair_ids_and_mirror_partners(category):
    shapes.check_family(category)
    fam = shapes.family(category)
    perm = flips.flip_permutation(category)
    table = json.loads(
        (Path(flips.__file__).parent.parent / "resources" / "spair-keypoint-flips.json").read_text()
    )["per_category"][category]
    for seed in range(3):
        kp = fam.sample(np.random.default_rng(seed)).keypoints()
        assert kp.shape == (flips.num_keypoints(category), 3)
        assert torch.allclose(kp @ torch.from_numpy(MIRROR), kp[perm], atol=1e-9)
        for k in table["self"]:
            assert abs(kp[k, 0].item()) < 1e-9  # self ids lie on the mirror plane


def test_instances_vary_beyond_a_rigid_template():
    """One rigid (similarity) template cannot fit every instance: Procrustes residuals of
    instances against the template are several percent of the object size."""
    from semalign3d.geometry import procrustes_align

    for category in CATS:
        fam = shapes.family(category)
        tmpl = fam.template().keypoints()
        _, half = shapes.class_frame(category)
        rms = [
            float(procrustes_align(fam.sample(np.random.default_rng(s)).keypoints(), tmpl)[1])
            for s in range(8)
        ]
        assert max(rms) / half > 0.03, category


def test_unknown_category_is_an_error(tmp_path):
    with pytest.raises(DataError, match="cow"):
        shapes.family("cow")
    with pytest.raises(DataError, match="cow"):
        gen.generate_dataset(tmp_path / "x", replace(TINY, categories=("cow",)), progress=False)
    assert not (tmp_path / "x").exists()  # nothing written before the check


# ------------------------------------------------------------------------------ cameras
def test_camera_convention_and_mirror():
    r = cam_mod.view_rotation(30.0, 20.0, 5.0)
    assert np.allclose(r @ r.T, np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)
    cam = cam_mod.Camera(r, np.array([0.1, -0.2, 4.0]), 1.5, 300, 200)
    on_axis = torch.from_numpy(r.T @ (np.array([0.0, 0.0, 3.0]) - cam.translation))[None]
    xy, z = cam.project(on_axis)
    assert xy[0].tolist() == pytest.approx([150.0, 100.0]) and z.item() == pytest.approx(3.0)
    pts = torch.tensor([[0.3, 0.1, -0.2], [-0.4, 0.2, 0.5]], dtype=torch.float64)
    xy, z = cam.project(pts)
    # rays are scaled so that t is the camera depth
    back = torch.from_numpy(cam.center) + z[:, None] * cam.rays(xy)
    assert torch.allclose(back, pts, atol=1e-12)
    xm, zm = cam.mirrored().project(pts @ torch.from_numpy(MIRROR))
    assert torch.allclose(xm[:, 0], 300 - xy[:, 0]) and torch.allclose(xm[:, 1], xy[:, 1])
    assert torch.allclose(zm, z)


def test_viewpoint_buckets():
    assert cam_mod.azimuth_id(0.0) == 0 and cam_mod.azimuth_id(350.0) == 0
    assert cam_mod.azimuth_id(44.0) == 1 and cam_mod.azimuth_id(181.0) == 4
    assert cam_mod.viewpoint_variation(10.0, 20.0) == 0
    assert cam_mod.viewpoint_variation(0.0, 50.0) == 1
    assert cam_mod.viewpoint_variation(350.0, 100.0) == 2
    assert cam_mod.is_mirror_pair(90.0, 270.0) == 1 and cam_mod.is_mirror_pair(90.0, 80.0) == 0


# ------------------------------------------------------------------------------ rendered data
def test_stored_keypoints_are_projections_of_stored_3d_keypoints(root, ds):
    for category in CATS:
        for name in ds.split_image_names("test", category):
            z = np.load(root / "Synthetic" / category / f"{name}.npz")
            r, t = torch.from_numpy(z["rotation"]), torch.from_numpy(z["translation"])
            cam_pts = torch.from_numpy(z["keypoints_canonical"]) @ r.T + t
            assert torch.allclose(cam_pts, torch.from_numpy(z["keypoints_camera"]), atol=1e-9)
            w, h = (int(v) for v in z["image_size"])
            uv = project(
                cam_pts[None],
                torch.tensor([float(z["focal"])]),
                torch.from_numpy(z["principal"])[None],
            )[0]
            px = uv * max(h, w)
            assert torch.allclose(px, torch.from_numpy(z["keypoints_pixels"]), atol=1e-6)
            img = ds.image(category, name)
            vis = torch.from_numpy(z["visible"])
            assert torch.equal(img.visible, vis)
            assert torch.allclose(img.keypoints[vis], px[vis].float(), atol=0.006)  # 2 decimals


def test_occluded_keypoints_lie_behind_the_depth_map(root, ds):
    n_occ = n_vis = bad_occ = bad_vis = 0
    for category in CATS:
        _, half = shapes.class_frame(category)
        for name in ds.split_image_names("test", category) + ds.train_image_names(category):
            z = np.load(root / "Synthetic" / category / f"{name}.npz")
            depth, kz = z["depth"], z["keypoints_camera"][:, 2]
            h, w = depth.shape
            for (x, y), zk, v in zip(z["keypoints_pixels"], kz, z["visible"], strict=True):
                if not (0 <= x < w and 0 <= y < h):
                    continue
                d = depth[int(y), int(x)]
                if v:
                    n_vis += 1
                    # the surface seen at a visible keypoint is at its depth (or background)
                    bad_vis += int(d > 0 and d < zk - 0.2 * half)
                else:
                    # something nearer covers it (3 x 3 px: occluded points on an outline can
                    # fall on a background pixel centre)
                    n_occ += 1
                    nb = depth[max(int(y) - 1, 0) : int(y) + 2, max(int(x) - 1, 0) : int(x) + 2]
                    bad_occ += int(not ((nb > 0) & (nb < zk)).any())
    assert n_occ > 20 and n_vis > 100
    assert bad_occ / n_occ < 0.02 and bad_vis / n_vis < 0.02, (bad_occ, n_occ, bad_vis, n_vis)


def test_masks_boxes_and_reader(root, ds):
    assert ds.categories == sorted(CATS)
    for category in CATS:
        train = {n for n, s in gen.image_names(TINY, category) if s == "trn"}
        assert set(ds.train_image_names(category)) == train  # every train image is in a pair
        tests = ds.pair_names("test", category)
        assert 0 < len(tests) <= TINY.n_test_pairs
        for pair in ds.pairs("test", category):
            src, trg = ds.image(category, pair.source), ds.image(category, pair.target)
            ids = torch.tensor(pair.kps_ids)
            assert len(ids) >= TINY.min_common_keypoints
            assert bool(src.visible[ids].all() and trg.visible[ids].all())
            assert torch.allclose(pair.src_kps, src.keypoints[ids])
            assert pair.trg_bbox == trg.bbox and pair.viewpoint_variation in (0, 1, 2)
        img = ds.image(category, tests and ds.pair("test", tests[0]).source)
        rgb, mask = load_rgb(img), load_mask(img)
        assert rgb.shape == (3, img.height, img.width) and rgb.dtype == torch.uint8
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert img.bbox == (
            xs.min().item(),
            ys.min().item(),
            xs.max().item() + 1,
            ys.max().item() + 1,
        )
    layout = (root / "Layout" / "small" / "test.txt").read_text().split()
    assert sorted(layout) == sorted(ds.pair_names("test"))


def test_class_file_holds_mirror_symmetric_means(root):
    for category in CATS:
        cls = json.loads((root / "Synthetic" / category / "class.json").read_text())
        mean = torch.tensor(cls["mean_keypoints"])
        perm = flips.flip_permutation(category)
        assert len(cls["keypoint_names"]) == mean.shape[0] == flips.num_keypoints(category)
        assert torch.allclose(mean @ torch.from_numpy(MIRROR).float(), mean[perm], atol=1e-5)
        tmpl = torch.tensor(cls["template_keypoints"])
        rel = (mean - tmpl).norm(dim=-1).max() / cls["normalisation"]["half_extent"]
        assert rel < 0.2  # the template is the family's centre, close to its mean


def test_same_seed_gives_identical_files_and_reruns_skip(root, tmp_path):
    other = tmp_path / "b"
    gen.generate_dataset(other, TINY, progress=False)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for f in files:
        assert (root / f).read_bytes() == (other / f).read_bytes(), f
    stamp = {f: (other / f).stat().st_mtime_ns for f in files if f.suffix == ".jpg"}
    summary = gen.generate_dataset(other, TINY, progress=False)
    assert summary["rendered"] == 0 and summary["skipped"] == len(stamp)
    assert all((other / f).stat().st_mtime_ns == t for f, t in stamp.items())
    with pytest.raises(DataError, match="other parameters"):
        gen.generate_dataset(other, replace(TINY, seed=4), progress=False)


@pytest.mark.parametrize("category,index", [("chair", 5), ("tvmonitor", 6), ("aeroplane", 7)])
def test_mirrored_render_matches_flipped_image(category, index):
    """Rendering the (symmetric) instance from the mirrored camera gives the flipped image with
    left/right keypoint ids swapped."""
    sc = _scene(category, index)
    fam = shapes.family(category)
    light = render.sample_lighting(np.random.default_rng(0))
    a = render.render_view(fam, sc.instance, sc.camera, sc.palette, light, np.random.default_rng(1))
    mcam = sc.camera.mirrored()
    b = render.render_view(fam, sc.instance, mcam, sc.palette, light, np.random.default_rng(1))
    fm = a["mask"].flip(-1)
    iou = (fm & b["mask"]).sum() / (fm | b["mask"]).sum()
    assert iou > 0.95
    assert torch.allclose(b["depth"], a["depth"].flip(-1), atol=1e-4)
    from semalign3d.data.records import AnnotatedImage

    rec = AnnotatedImage(
        sc.name,
        category,
        Path("x.jpg"),
        sc.camera.width,
        sc.camera.height,
        (0.0, 0.0, 1.0, 1.0),
        torch.where(sc.visible[:, None], sc.keypoints, torch.nan).float(),
        sc.visible,
    )
    flipped = flips.flip_image(rec)
    xy, _, vis = render.keypoint_visibility(sc.instance, mcam, TINY.visibility_tolerance)
    assert torch.equal(vis, flipped.visible)
    # both mirror continuous pixel coordinates as x -> W - x
    assert torch.allclose(xy[vis].float(), flipped.keypoints[vis], atol=1e-3)


# ------------------------------------------------------------------------------ oracle encoder
def test_embedding_symmetry_blend():
    emb = category_embedding("chair", 64, 0.25, seed=0)
    c = torch.tensor([[0.4, 0.1, -0.3], [0.0, 0.5, 0.2]])
    part = torch.tensor([1, 2])
    mc = c * torch.tensor([-1.0, 1.0, 1.0])
    sym = embed(c, part, emb, symmetry=1.0, part_weight=0.3)
    assert torch.allclose(sym, embed(mc, part, emb, 1.0, 0.3), atol=1e-6)
    assert torch.allclose(sym.norm(dim=-1), torch.ones(2), atol=1e-6)
    asym = embed(c, part, emb, symmetry=0.0, part_weight=0.3)
    mirrored = embed(mc, part, emb, 0.0, 0.3)
    assert (asym[0] @ mirrored[0]).item() < 0.9  # a left part no longer looks like the right
    assert torch.allclose(asym[1], mirrored[1])  # points on the mirror plane are unchanged


def test_oracle_encoder_maps(root, ds):
    img = ds.image("chair", ds.split_image_names("test", "chair")[0])
    enc = OracleEncoder(root)
    (d,) = enc.encode([img])
    assert enc.name == "oracle" and d.features.shape == (64, 60, 60)
    assert torch.allclose(d.features.norm(dim=0), torch.ones(60, 60), atol=1e-5)
    assert d.grid == FeatureGrid(img.height, img.width, 60, 60)
    assert torch.equal(enc.encode([img])[0].features, d.features)  # deterministic
    (big,) = OracleEncoder(root, 32, channels=768).encode([img])
    assert big.features.shape == (768, 32, 32)
    assert torch.allclose(big.features.norm(dim=0), torch.ones(32, 32), atol=1e-5)
    keys = {
        OracleEncoder(root, **kw).cache_key()
        for kw in (
            {},
            {"symmetry": 0.0},
            {"noise": 0.1},
            {"channels": 32},
            {"grid_size": 30},
            {"appearance": 0.0},
            {"bandwidth": 0.1},
            {"part_weight": 0.0},
            {"context": 0.0},
        )
    }
    assert len(keys) == 9


def test_oracle_flip_is_the_mirrored_image(root, ds):
    img = ds.image("chair", ds.split_image_names("test", "chair")[1])
    sym = OracleEncoder(root, symmetry=1.0)
    a, b = sym.encode([img])[0].features, sym.encode([flips.flip_image(img)])[0].features
    assert torch.allclose(b, a.flip(-1), atol=1e-6)  # symmetric features: flip = mirror
    asym = OracleEncoder(root, symmetry=0.0)
    a, b = asym.encode([img])[0].features, asym.encode([flips.flip_image(img)])[0].features
    assert (b - a.flip(-1)).abs().max() > 0.05  # left/right aware features change


@pytest.mark.parametrize("symmetry", [0.0, 1.0])
def test_oracle_flip_equals_encoding_of_mirrored_render(symmetry):
    sc = _scene("chair", 5)
    fam = shapes.family("chair")
    maps = render.oracle_maps(sc.instance, fam.template(), sc.camera, 120)
    mmaps = render.oracle_maps(sc.instance, fam.template(), sc.camera.mirrored(), 120)
    assert torch.equal(mmaps["part"], maps["part"].flip(-1))
    grid = FeatureGrid(sc.camera.height, sc.camera.width, 60, 60)
    emb = category_embedding("chair", 64, 0.25, 0)
    kw = dict(symmetry=symmetry, part_weight=0.3, noise=0.0, appearance=0.3, appearance_seed=7)

    def enc(m, flipped):
        return oracle_descriptors(
            m["coords"],
            m["part"],
            grid,
            emb,
            flipped=flipped,
            image_rng=np.random.default_rng(0),
            **kw,
        )

    flipped, mirrored = enc(maps, True), enc(mmaps, False)
    # cells covered by the object (with its receptive field) do not depend on the background
    inside = ndimage.binary_erosion((mmaps["part"] > 0).numpy(), iterations=12)
    cells = torch.from_numpy(inside[1::2, 1::2])
    assert int(cells.sum()) > 20
    assert torch.allclose(flipped[:, cells], mirrored[:, cells], atol=1e-4)


def test_metadata_of_an_older_generator_is_refused(root, tmp_path):
    """A dataset whose record lacks a generation setting of this code was drawn by other rules;
    reading it must fail and say how to regenerate, not silently evaluate on it."""
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((root / "synthetic.json").read_text())
    del meta["generation"]["min_visible_keypoints"]
    (old / "synthetic.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="older generator.*min_visible_keypoints.*data synth"):
        gen.read_metadata(old)
    assert gen.read_metadata(root)["generation"]["min_visible_keypoints"] == 4


def test_oracle_bad_inputs(root, ds, tmp_path):
    with pytest.raises(DataError, match="synthetic.json"):
        OracleEncoder(tmp_path)
    with pytest.raises(ValueError, match="symmetry"):
        OracleEncoder(root, symmetry=1.5)
    with pytest.raises(ValueError, match="grid_size"):
        OracleEncoder(root, grid_size=0)
    img = ds.image("chair", ds.split_image_names("test", "chair")[0])
    ghost = replace(img, name="missing_0000")
    with pytest.raises(DataError, match="missing_0000"):
        OracleEncoder(root).encode([ghost])
    with pytest.raises(DataError, match="record says"):
        OracleEncoder(root).encode([replace(img, width=img.width + 1)])
    with pytest.raises(DataError, match="missing_0000"):
        SyntheticDepth(root).disparity([ghost])


def test_nearest_neighbour_pck_drops_with_mirror_symmetric_features(root, ds):
    """The failure mode SemAlign3D targets: with left/right-blind features NN matching loses
    accuracy (noise-free features so that the tiny test set is not noisy)."""
    pck = {}
    for s in (0.0, 1.0):
        enc = OracleEncoder(root, symmetry=s, noise=0.0)
        ok = []
        for category in ("chair", "tvmonitor"):
            names = ds.split_image_names("test", category)
            maps = dict(zip(names, enc.encode([ds.image(category, n) for n in names]), strict=True))
            for pair in ds.pairs("test", category):
                pred = nn_match(maps[pair.source], maps[pair.target], pair.src_kps)
                ok.append(correct_keypoints(pred, pair.trg_kps, pair.trg_bbox_size, (0.1,))[0])
        pck[s] = 100 * torch.cat(ok).double().mean().item()
    assert pck[0.0] > 75 and pck[1.0] < pck[0.0] - 10, pck


# ------------------------------------------------------------------------------ depth
def test_synthetic_depth_is_monotone_in_true_depth(root, ds):
    model = SyntheticDepth(root)
    assert model.name == "synthetic"
    full, eroded = [], []
    for category in CATS:
        for name in ds.split_image_names("test", category):
            img = ds.image(category, name)
            (disp,) = model.disparity([img])
            assert disp.shape == (img.height, img.width) and bool((disp > 0).all())
            z = torch.from_numpy(np.load(root / "Synthetic" / category / f"{name}.npz")["depth"])
            m = (z > 0).numpy()
            full.append(spearmanr(disp.numpy()[m], z.numpy()[m]).statistic)
            core = ndimage.binary_erosion(m, iterations=2)
            if core.sum() > 30:
                eroded.append(spearmanr(disp.numpy()[core], z.numpy()[core]).statistic)
            # the background is farther than the object (outline pixels blend the two)
            assert disp[~torch.from_numpy(m)].median() < disp[torch.from_numpy(core)].min()
    assert np.median(full) < -0.9 and max(eroded) < -0.9, (full, eroded)
    img = ds.image("bottle", ds.split_image_names("test", "bottle")[0])
    a, b = model.disparity([img, flips.flip_image(img)])
    assert torch.equal(b, a.flip(-1))


# ------------------------------------------------------------------------------ CLI
def test_cli_synth_writes_a_readable_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--categories",
            "bottle",
            "--n-train",
            "2",
            "--n-val",
            "0",
            "--n-test",
            "2",
            "--n-test-pairs",
            "2",
            "--symmetry",
            "0.5",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "bottle" in text and "4 images rendered" in text
    meta = gen.read_metadata(out)
    assert meta["oracle"]["symmetry"] == 0.5 and meta["categories"] == ["bottle"]
    ds = SPairDataset(out)
    assert ds.categories == ["bottle"]
    for name in ("bottle_0000", "bottle_0001", "bottle_0002", "bottle_0003"):
        assert int(ds.image("bottle", name).visible.sum()) >= TINY.min_visible_keypoints
    assert cli_main(["data", "synth", "--out", str(tmp_path / "bad"), "--categories", "cow"]) == 2
