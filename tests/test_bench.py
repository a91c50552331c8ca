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
    assert cfg.align == Config().align.__class__(sparse_cells="foreground")  # nothing else
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
