"""End-to-end runner on a tiny synthetic dataset: predictions, resume equality, determinism,
and the ``evaluate``/``match`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from semalign3d.cli import main
from semalign3d.config import AlignConfig, Config, PriorConfig, replace
from semalign3d.data.spair import SPairDataset
from semalign3d.experiment import RunDir, evaluate_category, summaries

CAT = "bottle"
FAST_PRIOR = PriorConfig(focal_steps=100, placement_grid=12, refine_steps=50, n_clusters=60,
                         kmeans_iters=5, feature_neighbors=50, samples_per_image=4,
                         min_relation_samples=8, use_flips=False)
# a tiny alignment: the schedules keep Table 5's shape on 40 steps
FAST_ALIGN = replace(AlignConfig(), n_steps=1000, w_depth_order=1.0)


def _config() -> Config:
    return Config(prior=FAST_PRIOR, align=FAST_ALIGN)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    rc = main(["data", "synth", "--out", str(root), "--categories", CAT, "--n-train", "6",
               "--n-val", "2", "--n-test", "4", "--n-test-pairs", "6", "--channels", "16",
               "--quiet"])
    assert rc == 0
    return root


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    from semalign3d.prior.build import build_from_dataset

    rep = build_from_dataset(dataset, CAT, _config(), cache_dir=run / "features", progress=False)
    rep.save(RunDir(run).prior(CAT))
    return run


def _evaluate(dataset, run, monkeypatch, **changes):
    import semalign3d.experiment as ex

    def tiny(category, base, profile):
        from semalign3d.align.profiles import category_config

        cfg = category_config(category, base, "cpu")
        from semalign3d.config import scale_schedules

        return replace(scale_schedules(cfg, 40), n_fitted_starts=3, max_dense_points=60,
                       max_geom_relations=200, **changes)

    monkeypatch.setattr(ex, "category_config", tiny)
    return evaluate_category(dataset, CAT, _config(), run, profile="cpu", progress=False)


def test_end_to_end_resume_equality(dataset, run_dir, monkeypatch):
    first = _evaluate(dataset, run_dir, monkeypatch)
    assert set(first.scores) == {"nn", "semalign3d"}
    n_pairs = len(SPairDataset(dataset).pair_names("test", CAT))
    assert len(first.predictions["nn"]) == n_pairs > 0
    assert set(first.predictions["semalign3d"]) == set(first.predictions["nn"])
    summary = summaries([first], _config())
    assert set(summary) == {"nn", "semalign3d"}
    assert summary["semalign3d"]["n_pairs"] == n_pairs and "by_viewpoint" in summary["semalign3d"]
    run = RunDir(run_dir)
    files = sorted((run_dir / "alignments" / CAT).glob("*.json"))
    assert len(files) == 4
    stored = {f.name: f.read_text() for f in files}
    preds = run.predictions("semalign3d", CAT).read_text()
    # a killed run: half of the per-image alignments are gone
    for f in files[::2]:
        f.unlink()
    second = _evaluate(dataset, run_dir, monkeypatch)
    assert {f.name: f.read_text() for f in files} == stored  # deterministic re-alignment
    assert run.predictions("semalign3d", CAT).read_text() == preds
    assert json.dumps(summaries([second], _config())) == json.dumps(summary)


def test_images_aligned_together_equal_one_at_a_time(dataset, run_dir, tmp_path, monkeypatch):
    # the energies of a batch separate over images: aligning 3 + 1 images at once gives each
    # what it gets alone, up to float rounding (exactly 0 without keypoint_facing, at most
    # 2e-4 px with it after 40 steps; where the batch changes the rounding is not pinned down)
    import shutil

    _evaluate(dataset, run_dir, monkeypatch)  # cached when another test ran it
    alone = sorted((run_dir / "alignments" / CAT).glob("*.json"))
    assert len(alone) == 4
    other = tmp_path / "run"
    shutil.copytree(run_dir / "prior", other / "prior")
    shutil.copytree(run_dir / "features", other / "features")
    _evaluate(dataset, other, monkeypatch, images_per_batch=3)
    for f in alone:
        a, b = (json.loads(p.read_text()) for p in (f, other / "alignments" / CAT / f.name))
        assert a["hypothesis"] == b["hypothesis"]
        torch.testing.assert_close(torch.tensor(b["keypoints_2d"]),
                                   torch.tensor(a["keypoints_2d"]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="images_per_batch must be >= 0"):
        _evaluate(dataset, tmp_path / "bad", monkeypatch, images_per_batch=-1)


def test_cached_alignments_of_other_settings_are_refused(dataset, run_dir, monkeypatch):
    _evaluate(dataset, run_dir, monkeypatch)
    settings = run_dir / "alignments" / f"{CAT}.settings.json"
    assert json.loads(settings.read_text())["align"]["seed"] == 0
    # speed and matching settings may change: the cached alignments still hold
    _evaluate(dataset, run_dir, monkeypatch, images_per_batch=2, sigma_sparse_inference=0.5)
    folder = run_dir / "alignments" / CAT
    with pytest.raises(ValueError, match=rf"other settings \(differing: align.seed\); pass "
                                         rf"another --out, or delete {folder} to realign"):
        _evaluate(dataset, run_dir, monkeypatch, seed=1)
    before = settings.read_text()
    settings.write_text("{")
    with pytest.raises(ValueError, match="unreadable record of the settings"):
        _evaluate(dataset, run_dir, monkeypatch)
    # alignments from before records were kept are adopted, with a warning
    settings.unlink()
    with pytest.warns(UserWarning, match="without a record of their settings"):
        _evaluate(dataset, run_dir, monkeypatch)
    assert settings.read_text() == before


def test_a_record_without_alignments_does_not_block(dataset, run_dir, tmp_path, monkeypatch):
    # a run that failed before its first alignment leaves a record but no alignment
    import shutil

    other = tmp_path / "run"
    shutil.copytree(run_dir / "prior", other / "prior")
    shutil.copytree(run_dir / "features", other / "features")
    stale = other / "alignments" / f"{CAT}.settings.json"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"align": {"seed": 7}}')
    _evaluate(dataset, other, monkeypatch)
    assert json.loads(stale.read_text())["align"]["seed"] == 0


def test_alignment_files_hold_the_traces(run_dir, dataset, monkeypatch):
    _evaluate(dataset, run_dir, monkeypatch)
    f = next((run_dir / "alignments" / CAT).glob("*.json"))
    d = json.loads(f.read_text())
    assert len(d["energy"]) == 40 and set(d["terms"]) >= {"dense", "sparse", "geom"}
    assert torch.tensor(d["keypoints"]).shape[1] == 3


def test_evaluate_command_and_bad_method(dataset, run_dir, tmp_path, capsys):
    out = tmp_path / "summary.json"
    # nn only: no alignment needed, exercises the CLI and the JSON layout
    rc = main(["evaluate", "--root", str(dataset), "--category", CAT, "--method", "nn",
               "--out", str(run_dir), "--json", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "per-image" in text and "viewpoint_variation" in text
    summary = json.loads(out.read_text())
    assert list(summary) == ["nn"]
    assert summary["nn"]["n_pairs"] == len(SPairDataset(dataset).pair_names("test", CAT))
    with pytest.raises(ValueError, match="unknown method"):
        evaluate_category(dataset, CAT, _config(), run_dir, methods=["sift"], progress=False)


def test_match_command(dataset, run_dir, tmp_path):
    img = sorted((dataset / "JPEGImages" / CAT).glob("*.jpg"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("align:\n  n_fitted_starts: 2\n  max_dense_points: 40\n"
                   "  max_geom_relations: 100\n")
    out = tmp_path / "match"
    rc = main(["match", str(img[0]), str(img[1]), "--category", CAT, "--prior",
               str(RunDir(run_dir).prior(CAT)), "--encoder", "oracle", "--root", str(dataset),
               "--config", str(cfg), "--steps", "20", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "matches.json").read_text())
    assert len(m["queries"]) == len(m["matches"]) == len(m["landed_on"]) > 0
    assert m["partner_swap"] is True
    assert (out / "matches.png").stat().st_size > 0 and (out / "alignment2.png").is_file()
    rc = main(["match", str(img[0]), str(img[1]), "--category", "chair", "--prior",
               str(RunDir(run_dir).prior(CAT)), "--encoder", "oracle", "--root", str(dataset),
               "--out", str(out)])
    assert rc == 2  # wrong category: a clear error, no traceback


def test_prior_build_does_not_depend_on_the_thread_count(dataset, run_dir, monkeypatch):
    """build_from_dataset runs on one thread whatever torch is set to: the same file on any
    machine (multi-threaded reductions change last bits that the refinement amplifies)."""
    import torch

    import semalign3d.prior.build as build
    from semalign3d.prior.representation import ClassRepresentation

    seen = []
    original = build.build_representation

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(build, "build_representation", spy)
    build_from_dataset = build.build_from_dataset
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rep = build_from_dataset(dataset, CAT, _config(), cache_dir=run_dir / "features",
                                 progress=False)
        assert torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(n)
    assert seen == [1]
    ref = ClassRepresentation.load(RunDir(run_dir).prior(CAT))
    assert torch.equal(rep.sparse_xyz, ref.sparse_xyz)
    assert torch.equal(rep.dense_from_sparse, ref.dense_from_sparse)


def test_partner_landing_undoes_the_mirror_twin(run_dir):
    """A bottle's keypoints are planar and its descriptors mirror-symmetric, so a fit can be
    the twin of the truth (every keypoint where its partner is). Eq. 14 lands a keypoint seen in
    the target on the partner that faces the camera, so both fits land on the same places."""
    import dataclasses
    import math

    from semalign3d.align.optimize import Alignment
    from semalign3d.data.flips import partner_positions
    from semalign3d.experiment import target_landing, transfer_pair
    from semalign3d.models.base import DescriptorMap, FeatureGrid
    from semalign3d.prior.representation import ClassRepresentation

    rep = ClassRepresentation.load(RunDir(run_dir).prior(CAT))
    partner = partner_positions(CAT, rep.keypoint_ids)
    k = rep.sparse_xyz.shape[0]
    left = torch.tensor([int(partner[i]) > i for i in range(k)])  # first of each pair
    assert left.sum() == k // 2 and bool((partner[partner] == torch.arange(k)).all())
    d = torch.float64
    # planar and exactly mirror-symmetric (x -> -x); left keypoints are seen from +x, right
    # ones from -x, both a little from the front (+z)
    height = torch.arange(k, dtype=d) // 2 * 0.05
    xyz = torch.stack([torch.where(left, 0.1, -0.1).to(d), height, torch.zeros(k, dtype=d)], -1)
    facing = torch.stack([torch.where(left, 0.6, -0.6).to(d), torch.zeros(k, dtype=d),
                          torch.full((k,), 0.3, dtype=d)], -1)
    rep = dataclasses.replace(rep, sparse_xyz=xyz.to(rep.sparse_xyz.dtype),
                              sparse_facing=facing.to(rep.sparse_xyz.dtype))
    # the camera looks from between +x and +z: left keypoints face it, right ones do not
    view = torch.tensor([1.0, 0.0, 1.0], dtype=d) / math.sqrt(2)
    c = math.sqrt(0.5)
    rot = torch.tensor([[-c, 0, c], [0, 1, 0], [-c, 0, -c]], dtype=d)  # 135 degrees about y
    torch.testing.assert_close(rot @ view, torch.tensor([0.0, 0.0, -1.0], dtype=d))
    truth = xyz @ rot.T + torch.tensor([0.0, 0.0, 3.0], dtype=d)

    def fit(kp):
        return Alignment("x", 100, 100, kp, 2.0, torch.zeros(k, 2, dtype=d), torch.zeros(1))

    cfg = AlignConfig()
    land_true = target_landing(rep, fit(truth), cfg)
    land_twin = target_landing(rep, fit(truth[partner]), cfg)
    assert bool(left[land_true].all())  # every keypoint lands on a camera-facing one
    torch.testing.assert_close(truth[land_true][left], truth[left])
    torch.testing.assert_close(truth[partner][land_twin], truth[land_true])
    # through Eq. 14: a twin target gives the true target's answers, unless the landing is off
    uv = 500 * truth[:, :2] / truth[:, 2:] + 50  # a 100 x 100 image seen at f = 500 px
    true_fit, twin_fit = (Alignment("x", 100, 100, kp, 5.0, p, torch.zeros(1))
                          for kp, p in ((truth, uv), (truth[partner], uv[partner])))
    # descriptors alike everywhere (the calibrated p_sem is 1): only the geometry decides
    c = rep.sparse_features.shape[1]
    unit = torch.nn.functional.normalize(torch.ones(c), dim=0)
    rep = dataclasses.replace(rep, sparse_features=unit.expand(k, c).to(rep.sparse_features))
    src = trg = DescriptorMap(unit[:, None, None].expand(c, 20, 20).clone(),
                              FeatureGrid(100, 100, 20, 20))
    cfg = replace(cfg, sigma_sparse_inference=0.02)
    want, used, landed = transfer_pair(rep, src, trg, true_fit, true_fit, uv, cfg)
    got, used_twin, landed_twin = transfer_pair(rep, src, trg, true_fit, twin_fit, uv, cfg)
    torch.testing.assert_close(got, want)
    assert used.tolist() == used_twin.tolist() == list(range(k))
    assert landed.tolist() == land_true.tolist()
    assert landed_twin.tolist() == land_twin.tolist()
    off = replace(cfg, partner_swap=False)
    assert not torch.equal(transfer_pair(rep, src, trg, true_fit, twin_fit, uv, off)[0], want)
    with pytest.raises(ValueError, match="table5"):  # Eq. 14's width never silently defaults
        transfer_pair(rep, src, trg, true_fit, true_fit, uv, AlignConfig())
    # off: the identity; on without facing vectors: a clear error
    assert target_landing(rep, fit(truth), replace(cfg, partner_swap=False)).tolist() == \
        list(range(k))
    bare = dataclasses.replace(rep, sparse_facing=torch.zeros(0, 3, dtype=rep.sparse_xyz.dtype))
    with pytest.raises(ValueError, match="partner_swap"):
        target_landing(bare, fit(truth), cfg)


def test_partner_error_breakdown_agrees_with_the_summary(dataset, run_dir, monkeypatch):
    # bench/partner_errors.py: right + at partner + elsewhere = 100 %, "right" is the summary's
    # per-keypoint PCK, predictions on the partners count at the partner, and relabelling the
    # twins leaves no twin and changes only pairs with a relabelled fit
    import importlib.util

    from semalign3d.data.flips import flip_permutation
    from semalign3d.experiment import alignment_scores
    from semalign3d.prior.representation import ClassRepresentation

    spec = importlib.util.spec_from_file_location(
        "partner_errors", Path(__file__).resolve().parents[1] / "bench" / "partner_errors.py")
    pe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pe)
    result = _evaluate(dataset, run_dir, monkeypatch)
    summary = summaries([result], _config())
    for m in ("nn", "semalign3d"):
        b = pe.breakdown(dataset, "test", CAT, result.predictions[m])
        assert b["keypoints"] == summary[m]["n_keypoints"]
        assert b["right"] + b["at_partner"] + b["elsewhere"] == pytest.approx(100.0)
        assert b["right"] == pytest.approx(summary[m]["by_alpha"]["0.1"]["per_keypoint"][CAT])
    # answering every keypoint with its partner's annotation: "at the partner" wherever the
    # target shows the partner (and the two are more than the threshold apart)
    ds = SPairDataset(dataset)
    perm = flip_permutation(CAT)
    on_partner, expected = {}, 0
    for name in result.predictions["nn"]:
        p = ds.pair("test", name)
        trg = ds.image(CAT, p.target)
        pts = [trg.keypoints[int(perm[k])] if not torch.isnan(trg.keypoints[int(perm[k]), 0])
               else torch.tensor([-1e4, -1e4]) for k in p.kps_ids]
        on_partner[name] = torch.stack(pts).tolist()
        expected += sum(int(perm[k]) != k and not torch.isnan(trg.keypoints[int(perm[k]), 0])
                        and float((trg.keypoints[int(perm[k])] - trg.keypoints[k]).norm())
                        > 0.1 * p.trg_bbox_size for k in p.kps_ids)
    b = pe.breakdown(dataset, "test", CAT, on_partner)
    assert expected > 0
    assert b["at_partner"] == pytest.approx(100.0 * expected / b["keypoints"])
    rep = ClassRepresentation.load(RunDir(run_dir).prior(CAT))
    relabelled, twins = pe.relabel_twins(dataset, rep, result.alignments)
    assert not any(s.mirrored for s in alignment_scores(dataset, rep, relabelled))
    assert {n for n in relabelled if relabelled[n] is not result.alignments[n]} == twins
    preds, pck, _, n = pe.relabelled_predictions(dataset, "test", CAT, run_dir, _config())
    assert set(preds) == set(result.predictions["semalign3d"]) and 0 <= pck <= 100
    assert n == len(twins)
    for name, pred in preds.items():
        p = ds.pair("test", name)
        if not {p.source, p.target} & twins:
            assert pred == result.predictions["semalign3d"][name]
