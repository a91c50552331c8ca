import json

import pytest
import torch

from semalign3d.cli import main
from semalign3d.evaluate import (
    PairScore,
    correct_keypoints,
    partner_misses,
    score_alignment,
    summarize,
)


def test_correct_keypoints_hand_case_and_comparison():
    gt = torch.zeros(3, 2)
    pred = torch.tensor([[10.0, 0.0], [0.0, 9.0], [30.0, 40.0]])  # distances 10, 9, 50
    ok = correct_keypoints(pred, gt, bbox_size=100.0, alphas=(0.1, 0.05, 0.5))
    assert ok.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    strict = correct_keypoints(pred, gt, 100.0, alphas=(0.1,), comparison="<")
    assert strict.tolist() == [[False, True, False]]
    nan = correct_keypoints(torch.full((1, 2), float("nan")), torch.zeros(1, 2), 100.0, (1.0,))
    assert nan.tolist() == [[False]]
    with pytest.raises(ValueError):
        correct_keypoints(pred, gt, 100.0, comparison="<<")


def test_per_image_and_per_keypoint_differ_hand_computed():
    # pair A: 1 of 1 correct; pair B: 1 of 3 correct (cat x); pair C: 0 of 2 (cat y)
    a = PairScore("a", "x", torch.tensor([[True]]))
    b = PairScore("b", "x", torch.tensor([[True, False, False]]))
    c = PairScore("c", "y", torch.tensor([[False, False]]))
    s = summarize([a, b, c], alphas=(0.1,))
    assert s["per_image"]["x"] == pytest.approx(100 * (1 + 1 / 3) / 2)  # 66.67
    assert s["per_keypoint"]["x"] == pytest.approx(50.0)  # 2 of 4
    assert s["per_image"]["all"] == pytest.approx(100 * (1 + 1 / 3 + 0) / 3)  # 44.44
    assert s["per_keypoint"]["all"] == pytest.approx(100 * 2 / 6)  # 33.33
    assert s["per_image"]["all_mean_of_categories"] == pytest.approx((200 / 3) / 2)  # 33.33
    assert s["per_keypoint"]["all_mean_of_categories"] == pytest.approx(25.0)
    assert s["n_pairs"] == 3 and s["n_keypoints"] == 6


def test_summary_empty():
    s = summarize([], alphas=(0.1,), n_skipped=4)
    assert s["n_pairs"] == 0 and s["n_skipped"] == 4 and s["per_image"]["all"] == 0.0


def _run_eval(root, preds, tmp_path, *extra):
    pf, out = tmp_path / "pred.json", tmp_path / "out.json"
    pf.write_text(json.dumps(preds))
    rc = main(["eval-pairs", "--root", str(root), "--predictions", str(pf), "--json", str(out),
               *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_eval_pairs_ground_truth_is_100_and_shifted_is_0(spair_mini, tmp_path):
    from semalign3d.data.spair import SPairDataset

    pairs = SPairDataset(spair_mini).pairs("test")
    gt = {p.name: p.trg_kps.tolist() for p in pairs}
    s = _run_eval(spair_mini, gt, tmp_path)
    for alpha, table in s["by_alpha"].items():
        assert table["per_image"]["all"] == 100.0, alpha
        assert table["per_keypoint"]["all"] == 100.0, alpha
    assert s["n_pairs"] == 12 and s["n_skipped"] == 0
    shifted = {}
    for p in pairs:
        t = p.trg_kps.clone()
        t[:, 0] += 0.1 * p.trg_bbox_size + 1
        shifted[p.name] = t.tolist()
    s = _run_eval(spair_mini, shifted, tmp_path)
    assert s["per_image"]["all"] == 0.0 and s["per_keypoint"]["all"] == 0.0
    assert s["alpha"] == 0.1


def test_eval_pairs_reports_missing_pairs(spair_mini, tmp_path, capsys):
    from semalign3d.data.spair import SPairDataset

    pairs = SPairDataset(spair_mini).pairs("test")
    preds = {p.name: p.trg_kps.tolist() for p in pairs[:5]}
    s = _run_eval(spair_mini, preds, tmp_path, "--alpha", "0.05")
    assert s["n_pairs"] == 5 and s["n_skipped"] == 7 and s["alpha"] == 0.05
    assert "skipped 7 pair(s)" in capsys.readouterr().out


def test_eval_pairs_bad_inputs(spair_mini, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main(["eval-pairs", "--root", str(spair_mini), "--predictions", str(bad)]) == 2
    assert "bad.json: not valid JSON" in capsys.readouterr().err
    name = "000001-2011_001863-2010_002195:pottedplant"
    bad.write_text(json.dumps({name: [[1, 2]]}))
    assert main(["eval-pairs", "--root", str(spair_mini), "--predictions", str(bad)]) == 2
    assert "has 1 points, the pair has 4 keypoints" in capsys.readouterr().err


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "features", "prior", "evaluate", "match", "eval-pairs", "book"):
        assert cmd in out


def test_score_alignment_hand_case_and_mirror_twin():
    gt = torch.tensor([[10.0, 10.0], [90.0, 10.0], [50.0, 50.0], [float("nan"), 0.0]])
    swap = torch.tensor([1, 0, 2, 3])
    # keypoints 0 and 1 landed on each other's place: 1/3 right, the swapped labelling 3/3
    pred = torch.tensor([[90.0, 11.0], [10.0, 9.0], [52.0, 50.0], [0.0, 0.0]])
    s = score_alignment("im", pred, gt, 100.0, swap, 0.1)
    assert (s.pck, s.pck_mirrored, s.n) == (pytest.approx(1 / 3), 1.0, 3) and s.mirrored
    right = score_alignment("im", gt.nan_to_num(0.0), gt, 100.0, swap, 0.1)
    assert right.pck == 1.0 and right.pck_mirrored == pytest.approx(1 / 3) and not right.mirrored
    with pytest.raises(ValueError, match="im"):
        score_alignment("im", pred[:3], gt, 100.0, swap)
    none = score_alignment("im", pred, torch.full((4, 2), float("nan")), 100.0, swap)
    assert none.n == 0 and not none.mirrored


def test_partner_misses_hand_case():
    nan = float("nan")
    # box 100 px, alpha 0.1: within 10 px counts
    pred = torch.tensor([[0.0, 0.0], [50.0, 0.0], [100.0, 100.0], [0.0, 0.0], [30.0, 0.0]])
    gt = torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    partner = torch.tensor([[0.0, 0.0], [55.0, 0.0], [nan, nan], [0.0, 0.0], [50.0, 0.0]])
    ok, at_partner = partner_misses(pred, gt, partner, 100.0)
    assert ok.tolist() == [True, False, False, True, False]
    # right keypoints never count at the partner, even when it is as near (rows 0 and 3)
    assert at_partner.tolist() == [False, True, False, False, False]
    # the threshold rule is correct_keypoints': a miss exactly 10 px from the partner counts
    # at it under "<=" and not under "<"
    far, partner10 = torch.tensor([[40.0, 0.0]]), torch.tensor([[50.0, 0.0]])
    assert partner_misses(far, gt[:1], partner10, 100.0, 0.1, "<=")[1].tolist() == [True]
    ok, at_partner = partner_misses(far, gt[:1], partner10, 100.0, 0.1, "<")
    assert ok.tolist() == [False] and at_partner.tolist() == [False]


def test_partner_misses_empty_and_bad_shapes():
    e = torch.zeros(0, 2)
    ok, at_partner = partner_misses(e, e, e, 50.0)
    assert ok.shape == at_partner.shape == (0,)
    with pytest.raises(ValueError, match="partner annotations"):
        partner_misses(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(1, 2), 50.0)
