"""Does the energy keep the true pose? Align every image from its true pose and score the pairs.

On synthetic data every image's true keypoints are known. This starts each alignment from the
representation's canonical keypoints fitted (least-squares similarity) to them, at the true focal
length, runs the configured schedule from there, and scores the pairs with Eq. 14 like
``semalign3d evaluate``. ``--start-only`` scores the start itself (no step is taken).

How to read it: the start-only PCK is what a perfect pose gives; a drop from it to the optimised
PCK is the energy's bias (its minimum lies elsewhere); a gap from the optimised PCK down to
``semalign3d evaluate``'s is the search's (the default start did not reach that basin).

    semalign3d evaluate --root data/synval120 --category bottle --split val --out runs/val
    python bench/oracle_start.py --root data/synval120 --run runs/val --category bottle \\
        --split val --out runs/oracle
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from semalign3d.align.hypotheses import Hypotheses
from semalign3d.align.model import prepare_model
from semalign3d.align.optimize import align
from semalign3d.align.profiles import PROFILES, category_config
from semalign3d.align.target import stack_targets
from semalign3d.config import Config, load_yaml, replace
from semalign3d.data.spair import SPairDataset
from semalign3d.experiment import RunDir, build_targets, encode, evaluate_category, summaries
from semalign3d.geometry import similarity_fit
from semalign3d.io import write_json
from semalign3d.prior.representation import ClassRepresentation


def true_start(npz: Path, rep: ClassRepresentation, z_bar: torch.Tensor,
               dtype: torch.dtype) -> Hypotheses:
    """The canonical keypoints placed on an image's true keypoints (one hypothesis), at the
    depth gauge's ``z_bar`` (a scale that leaves the projection unchanged)."""
    data = np.load(npz)
    true_kp = torch.from_numpy(data["keypoints_camera"])[rep.keypoint_ids].to(dtype)
    true_kp = true_kp * (z_bar / true_kp[:, 2].mean())
    canon = rep.sparse_xyz.to(dtype)
    scale, rot, shift = similarity_fit(canon, true_kp)
    start = scale * canon @ rot.T + shift
    focal_inv = torch.tensor([[1.0 / float(data["focal"])]], dtype=dtype)
    return Hypotheses(start[None, None], focal_inv, rot[None, None], torch.tensor([True]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path, help="synthetic dataset root")
    p.add_argument("--run", required=True, type=Path,
                   help="run directory of 'semalign3d evaluate' whose prior and descriptors "
                        "are reused")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory for the oracle-started alignments (a fresh one per "
                        "setting: cached alignments are reused)")
    p.add_argument("--category", required=True)
    p.add_argument("--split", default="val", choices=("trn", "val", "test"))
    p.add_argument("--config", type=Path, default=None, help="YAML Config to align with")
    p.add_argument("--profile", default="cpu", choices=PROFILES)
    p.add_argument("--start-only", action="store_true",
                   help="score the true-pose start itself (no optimisation step)")
    a = p.parse_args()
    config = load_yaml(Config, a.config) if a.config else Config()
    cfg = category_config(a.category, config.align, a.profile)
    if a.start_only:
        cfg = replace(cfg, n_steps=1, lr=0.0)
    shared, out = RunDir(a.run), RunDir(a.out)
    if not shared.prior(a.category).is_file():
        raise SystemExit(f"{shared.prior(a.category)} is missing: run 'semalign3d evaluate "
                         f"--out {a.run}' on this category first")
    for src, dst in ((shared.prior(a.category), out.prior(a.category)),
                     (shared.features, out.features)):
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve())
    rep = ClassRepresentation.load(out.prior(a.category))
    ds = SPairDataset(a.root)
    pairs = ds.pairs(a.split, a.category)
    names = list(dict.fromkeys(n for pr in pairs for n in (pr.source, pr.target)))
    todo = [n for n in names if not out.alignment(a.category, n).is_file()]
    images = [ds.image(a.category, n) for n in todo]
    descriptors = encode(images, config, a.root, out, progress=False) if images else []
    model = prepare_model(rep, cfg)
    for im, desc in tqdm(list(zip(images, descriptors, strict=True)), desc="oracle starts"):
        torch.manual_seed(cfg.seed)
        batch = stack_targets(build_targets([im], [desc], model, cfg, config, a.root), model, cfg)
        npz = a.root / "Synthetic" / a.category / f"{im.name}.npz"
        if not npz.is_file():
            raise SystemExit(f"{npz} is missing: --root must be a synthetic dataset "
                             "('semalign3d data synth') whose truth records are kept")
        init = true_start(npz, rep, batch.z_bar[0], batch.cells.dtype)
        write_json(out.alignment(a.category, im.name), align(batch, model, cfg, init)[0].to_dict())
    # every image is aligned now, so evaluation only matches and scores
    r = evaluate_category(a.root, a.category, config, out.root, methods=("semalign3d",),
                          profile=a.profile, split=a.split, progress=False)
    s = summaries([r], config)["semalign3d"]
    label = "true-pose start" if a.start_only else "optimised from the true pose"
    print(f"{a.category} ({a.split}, {len(pairs)} pairs), {label}: per-image PCK@0.1 "
          f"{s['per_image']['all']:.1f}; by viewpoint variation "
          + json.dumps({k: round(v, 1) for k, v in s["by_viewpoint"].items()}))


if __name__ == "__main__":
    main()
