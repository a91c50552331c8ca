"""Is the truth a minimum of the alignment energy? Eq. 13's terms at the true pose vs at the fit.

On synthetic data every image's true camera-frame keypoints are known, so the energy can be
evaluated where the alignment should end. For each image of an evaluated run directory this
compares the weighted terms (at the schedules' last step) at the truth, pinned to the depth
gauge, with those at the fitted pose, and measures how much smaller the fitted keypoint spread is
than the annotated one. A biased energy shows as a truth of higher energy than the fit.

    semalign3d evaluate --root data/synval --category bottle --out runs/val --split val ...
    python bench/energy_at_truth.py --root data/synval --run runs/val --category bottle
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from semalign3d.align.energy import TERMS, energy_terms, schedule_tables
from semalign3d.align.model import prepare_model
from semalign3d.align.optimize import Alignment
from semalign3d.align.profiles import PROFILES, category_config
from semalign3d.align.target import stack_targets
from semalign3d.config import Config, load_yaml
from semalign3d.data.spair import SPairDataset
from semalign3d.experiment import RunDir, build_targets, encode
from semalign3d.prior.representation import ClassRepresentation


def spread(points: torch.Tensor) -> float:
    """Mean distance of ``[N x 2]`` points from their centroid."""
    return float((points - points.mean(0)).norm(dim=-1).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path, help="synthetic dataset root")
    p.add_argument("--run", required=True, type=Path,
                   help="run directory of 'semalign3d evaluate' (prior, features, alignments)")
    p.add_argument("--category", required=True)
    p.add_argument("--config", type=Path, default=None, help="YAML Config the run used")
    p.add_argument("--profile", default="cpu", choices=PROFILES)
    a = p.parse_args()
    config = load_yaml(Config, a.config) if a.config else Config()
    cfg = category_config(a.category, config.align, a.profile)
    run = RunDir(a.run)
    rep = ClassRepresentation.load(run.prior(a.category))
    ds = SPairDataset(a.root)
    files = sorted((a.run / "alignments" / a.category).glob("*.json"))
    if not files:
        raise SystemExit(f"no alignments under {a.run / 'alignments' / a.category}")
    images = [ds.image(a.category, f.stem) for f in files]
    descriptors = encode(images, config, a.root, run, progress=False)
    model = prepare_model(rep, cfg)
    last = schedule_tables(cfg).values[-1]
    sigma_d, sigma_s, weights = last[0], last[1], last[2:]
    sums = {"truth": torch.zeros(len(TERMS)), "fit": torch.zeros(len(TERMS))}
    truth_lower, ratios = 0, []
    for f, im, desc in zip(files, images, descriptors, strict=True):
        fit = Alignment.from_dict(json.loads(f.read_text()))
        batch = stack_targets(build_targets([im], [desc], model, cfg, config, a.root), model, cfg)
        dt = batch.cells.dtype
        npz = np.load(a.root / "Synthetic" / a.category / f"{im.name}.npz")
        true_kp = torch.from_numpy(npz["keypoints_camera"])[rep.keypoint_ids].to(dt)
        # at the depth gauge's target (projections are unchanged by the scale)
        true_kp = true_kp * (batch.z_bar[0] / true_kp[:, 2].mean())
        energies = {}
        for key, kp, focal in (("truth", true_kp, float(npz["focal"])),
                               ("fit", fit.keypoints.to(dt), fit.focal)):
            with torch.no_grad():
                t = energy_terms(kp[None, None], torch.tensor([[focal]], dtype=dt), batch,
                                 model, sigma_d, sigma_s, cfg)
            v = torch.stack([weights[j] * t[n][0, 0].float() for j, n in enumerate(TERMS)])
            sums[key] += v
            energies[key] = float(v.sum())
        truth_lower += energies["truth"] < energies["fit"]
        gt = im.keypoints[rep.keypoint_ids].double()
        ok = ~torch.isnan(gt[:, 0])
        if int(ok.sum()) >= 3:
            ratios.append(spread(gt[ok]) / spread(fit.keypoints_2d.double()[ok]))
    n = len(files)
    print(f"{a.category}: {n} images of {a.run}, weighted terms at the last schedule step")
    print(f"{'':<6}" + "".join(f"{t:>11}" for t in TERMS) + f"{'total':>11}")
    for key, v in sums.items():
        print(f"{key:<6}" + "".join(f"{float(x) / n:11.3f}" for x in v)
              + f"{float(v.sum()) / n:11.3f}")
    print(f"truth lower than the fit in {truth_lower} / {n} images")
    if ratios:
        print(f"annotated / fitted keypoint spread: median {statistics.median(ratios):.3f}, "
              f"mean {statistics.fmean(ratios):.3f} ({len(ratios)} images with >= 3 keypoints)")


if __name__ == "__main__":
    main()
