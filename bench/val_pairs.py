"""A synthetic validation root with more val pairs, stratified by viewpoint change like test.

``semalign3d data synth`` draws 20 unstratified val pairs per category; ablations decided on
them swing by several points with the alignment seed alone. This copies a generated root (files
hard-linked: nothing is rendered again, so the images, priors and descriptors are the same) and
redraws its val pairs with the test split's stratified sampler:

    semalign3d data synth --out data/synval --seed 1 --n-val 30 --n-test 4 --n-test-pairs 4
    python bench/val_pairs.py data/synval data/synval120 --pairs 120
    python bench/ablation.py --root data/synval120 --split val --seeds 0 1 2 ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from semalign3d.data.synthetic import generate as gen
from semalign3d.data.synthetic.pairs import sample_pairs
from semalign3d.io import atomic_write

#: offset of the val-pair generator's seed (test pairs use 10_000_000 + split index)
SEED_OFFSET = 20_000_001


def config_of(meta: dict) -> gen.SynthConfig:
    """The generation config recorded in a root's ``synthetic.json``."""
    g = meta["generation"]
    base = gen.SynthConfig()
    cfg = replace(base, categories=tuple(meta["categories"]), seed=meta["seed"],
                  n_train=g["n_train"], n_val=g["n_val"], n_test=g["n_test"],
                  n_val_pairs=g["n_val_pairs"], n_test_pairs=g["n_test_pairs"])
    if gen.metadata(cfg, cfg.categories)["generation"] != g:
        raise SystemExit("the root was generated with settings this script does not carry over "
                         "(only seed, categories, image and pair counts)")
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="a root written by 'semalign3d data synth'")
    p.add_argument("dst", type=Path, help="new root (must not exist)")
    p.add_argument("--pairs", type=int, default=120, help="val pairs per category")
    a = p.parse_args()
    if a.dst.exists():
        raise SystemExit(f"{a.dst} exists; choose a new folder")
    meta = gen.read_metadata(a.src)
    cfg = config_of(meta)
    tmp = a.dst.with_name(a.dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(a.src, tmp, copy_function=os.link)
    val = tmp / "PairAnnotation" / "val"
    shutil.rmtree(val)  # removes links only
    val.mkdir()
    sampler = replace(cfg, n_test_pairs=a.pairs)
    for category in cfg.categories:
        names = gen.image_names(cfg, category)
        scenes = [gen.make_scene(cfg, category, i, n, s) for i, (n, s) in enumerate(names)]
        group = [sc for sc in scenes if sc.split == "val"]
        anns = {sc.name: json.loads(gen.scene_files(tmp, category, sc.name)["json"].read_text())
                for sc in group}
        rng = np.random.default_rng(gen.image_seed(cfg.seed, category, SEED_OFFSET))
        pairs = sample_pairs(group, "test", sampler, rng)
        gen.write_pairs(tmp, "val", group, anns, pairs)
        print(f"{category}: {len(pairs)} val pairs")
    # atomic writes replace the hard links, so the source root is never written through
    gen.write_layouts(tmp)
    meta["generation"]["n_val_pairs"] = a.pairs
    atomic_write(tmp / "synthetic.json",
                 lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))
    tmp.rename(a.dst)
    print(f"wrote {a.dst}")


if __name__ == "__main__":
    main()
