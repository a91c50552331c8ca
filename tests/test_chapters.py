"""Helpers behind book chapters 3-8 (``semalign3d.book.pipeline``), on the toy scene: fast, no
dataset. The chapters themselves are executed by tests/test_book.py (tiny profile)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from semalign3d.align.toy import render, toy_representation
from semalign3d.book import pipeline
from semalign3d.data.records import Pair

BOOK = Path(__file__).resolve().parents[1] / "book"


def _pair(name: str, src: str, trg: str) -> Pair:
    z = torch.zeros(1, 2)
    return Pair(name, "toy", "test", src, trg, (0,), z, z, (0, 0, 1, 1), (0, 0, 1, 1))


def test_pick_pairs_keeps_pairs_among_the_most_frequent_images():
    pairs = [_pair("p1", "a", "b"), _pair("p2", "a", "c"), _pair("p3", "b", "c"),
             _pair("p4", "d", "e")]
    chosen, used = pipeline.pick_pairs(pairs, 3)
    assert [p.name for p in chosen] == ["p1", "p2", "p3"]
    assert used == ["a", "b", "c"]
    assert len(pipeline.pick_pairs(pairs, 0)[0]) == 4


def test_recorded_trajectory_and_alignment_agree():
    rep, field_ = toy_representation(n_dense=60, channels=8)
    view = render(field_, torch.eye(3), torch.tensor([0.0, 0.0, 1.0]), grid=12, n_surface=3000)
    cfg = pipeline.align_config("toybox", n_steps=10, n_rotations=2, max_geom_relations=0)
    base = torch.optim.AdamW
    als, model, batch, traj = pipeline.align_images(
        rep, [view.descriptors], ["toy"], cfg, record_every=4, masks=[view.mask]
    )
    assert torch.optim.AdamW is base  # the recording patch is undone
    kps, finv = traj.stacked()
    assert traj.steps == [0, 4, 8]
    assert kps.shape == (3, 1, 2, 8, 3) and finv.shape == (3, 1, 2)
    assert len(als) == 1 and als[0].energy.shape == (10,)
    # errors along the trajectory are finite fractions of the box
    rec = type("R", (), {})()
    rec.keypoints, rec.height, rec.width = view.keypoints_2d.float(), 240, 320
    rec.bbox_size = 100.0
    errs = pipeline.trajectory_errors(traj, 0, als[0].hypothesis, rep, rec)
    assert errs.shape == (3,) and torch.isfinite(errs).all()


def test_book_profiles_name_known_prior_presets():
    raw = yaml.safe_load((BOOK / "params.yaml").read_text())
    for prof in raw.values():
        for ch, values in (prof.get("chapters") or {}).items():
            if values and "prior_preset" in values:
                assert values["prior_preset"] in pipeline.PRIOR_PRESETS, ch


def test_config_for_rejects_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="unknown prior preset"):
        pipeline.config_for(tmp_path, preset="huge")
