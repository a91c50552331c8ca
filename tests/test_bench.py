"""The ablation benchmark's bookkeeping (bench/ablation.py): variant configs, seed means, tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from semalign3d.config import Config, ConfigError

_spec = importlib.util.spec_from_file_location(
    "ablation", Path(__file__).resolve().parents[1] / "bench" / "ablation.py"
)
ablation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation)


def test_variant_config_sections_and_typos():
    cfg = ablation.variant_config(Config(), {"sparse_cells": "foreground",
                                             "masks": {"test_source": "ground_truth"}})
    assert cfg.align.sparse_cells == "foreground" and cfg.masks.test_source == "ground_truth"
    # nothing else, but the committed figures' device
    assert cfg.align == Config().align.__class__(sparse_cells="foreground", device="cpu")
    with pytest.raises(ConfigError, match="sparse_cell"):
        ablation.variant_config(Config(), {"sparse_cell": "image"})
    with pytest.raises(ConfigError, match="test_sorce"):
        ablation.variant_config(Config(), {"masks": {"test_sorce": "bbox"}})
    with pytest.raises(ConfigError, match="share one prior"):  # would need another prior
        ablation.variant_config(Config(), {"masks": {"train_source": "none"}})


def _cell(pck: float, vp2: float | None, al: float) -> dict:
    return {"semalign3d": {"pck": pck, "pck_vp2": vp2, "n_pairs": 10},
            "nn": {"pck": 50.0, "pck_vp2": 40.0, "n_pairs": 10},
            "seconds": 2.0, "alignment": {"pck": al, "mirrored": 10.0, "n_images": 5}}


def test_mean_over_seeds_exact():
    one = _cell(80.0, 70.0, 60.0)
    single = ablation.mean_over_seeds({1: one})  # one seed: its figures, and which seed it was
    assert single["semalign3d"] == one["semalign3d"] and list(single["seeds"]) == ["1"]
    m = ablation.mean_over_seeds({0: one, 1: _cell(90.0, None, 66.0), 2: _cell(70.0, 76.0, 54.0)})
    assert m["semalign3d"]["pck"] == pytest.approx(80.0)
    assert m["semalign3d"]["pck_vp2"] == pytest.approx(73.0)  # a missing bucket is left out
    assert m["alignment"]["pck"] == pytest.approx(60.0) and m["nn"]["pck"] == 50.0
    assert sorted(m["seeds"]) == ["0", "1", "2"] and m["seeds"]["1"]["semalign3d"]["pck"] == 90.0


def test_table_rows_with_a_missing_run():
    results = {"chair": {"default": _cell(80.0, 70.0, 60.0), "x": _cell(70.0, 60.0, 50.0)},
               "bottle": {"default": _cell(90.0, 85.0, 55.0)}}
    rows = ablation.table_rows(results)
    assert rows["pairs"][0] == ["NN baseline", "50.0 / 40.0", "50.0 / 40.0", "50.0"]
    no_default = {"chair": {"x": _cell(70.0, 60.0, 50.0)}}  # NN from the first variant
    assert ablation.table_rows(no_default)["pairs"][0] == ["NN baseline", "50.0 / 40.0", "50.0"]
    assert rows["pairs"][1] == ["default", "80.0 / 70.0", "90.0 / 85.0", "85.0"]
    assert rows["pairs"][2] == ["x", "70.0 / 60.0", "-", "70.0"]  # the mean skips "-"
    assert rows["alignment"][1][1] == "50.0 / 10.0"


_ospec = importlib.util.spec_from_file_location(
    "oracle_start", Path(__file__).resolve().parents[1] / "bench" / "oracle_start.py"
)
oracle_start = importlib.util.module_from_spec(_ospec)
_ospec.loader.exec_module(oracle_start)


def test_true_start_places_the_canonical_cloud_on_the_truth(tmp_path):
    """bench/oracle_start.py: when the true keypoints are a similarity of the canonical ones, the
    start is the truth itself, rescaled to the gauge's z-bar (projections unchanged), at
    1 / true focal."""
    import types

    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    canon = torch.randn(5, 3, generator=g, dtype=torch.float64)
    c, s = np.cos(0.7), np.sin(0.7)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    rot = rot @ torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    truth = 0.3 * canon @ rot.T + torch.tensor([0.1, -0.2, 2.0], dtype=torch.float64)
    # the file holds every category keypoint id; the representation uses ids 1..5
    table = torch.cat([torch.full((1, 3), float("nan"), dtype=torch.float64), truth])
    (tmp_path / "Synthetic" / "toy").mkdir(parents=True)
    np.savez(tmp_path / "Synthetic" / "toy" / "im.npz", keypoints_camera=table.numpy(),
             focal=np.float64(1.6))
    # bottle's left/right partners among ids 1..5: 2-3 and 4-5 (1's partner, 0, is not used)
    rep = types.SimpleNamespace(category="bottle", keypoint_ids=torch.arange(1, 6),
                                sparse_xyz=canon)
    image = types.SimpleNamespace(category="toy", name="im")
    h = oracle_start.true_start(rep, tmp_path, image, torch.tensor(1.0, dtype=torch.float64))
    assert h.keypoints.shape == (1, 1, 5, 3) and h.focal_inv.shape == (1, 1)
    torch.testing.assert_close(h.keypoints[0, 0], truth / truth[:, 2].mean())
    assert h.focal_inv.item() == pytest.approx(1 / 1.6) and bool(h.fitted.all())
    assert not bool(h.mirrored.any())
    proj = lambda p: p[:, :2] / p[:, 2:]  # noqa: E731
    torch.testing.assert_close(proj(h.keypoints[0, 0]), proj(truth))
    twin = oracle_start.true_start(rep, tmp_path, image, torch.tensor(1.0, dtype=torch.float64),
                                   twin=True)
    torch.testing.assert_close(twin.keypoints[0, 0], h.keypoints[0, 0, [0, 2, 1, 4, 3]])


def test_oracle_start_refuses_its_own_run_dir(tmp_path, monkeypatch, capsys):
    """--out equal to --run would overwrite the ordinary alignments: refused before any work."""
    import sys

    monkeypatch.setattr(sys, "argv", ["oracle_start.py", "--root", str(tmp_path), "--run",
                                      str(tmp_path / "r"), "--out", str(tmp_path / "r" / "."),
                                      "--category", "bottle"])
    with pytest.raises(SystemExit, match="directory of its own"):
        oracle_start.main()
