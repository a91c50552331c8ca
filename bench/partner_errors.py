"""Where do the misses go? Keypoint-level breakdown of evaluated runs (chapter 7).

For each run directory written by ``semalign3d evaluate --out RUN`` and each method in it, every
scored keypoint of every pair is counted once as

* right: within ``alpha * max(w, h)`` of the target box (``semalign3d.evaluate``'s rule);
* at the partner: wrong, but as close to the keypoint's left/right partner in the target
  (``semalign3d.evaluate.partner_misses``): the side was missed, not the place;
* elsewhere: every other miss.

The figures are pooled over keypoints (``per_keypoint``), so they differ slightly from the
per-image PCK of the summary tables.

``--relabel-truth`` adds a row per run: SemAlign3D's matching (Eq. 14 with the configured
landing) redone after every fit that is a mirror twin (its left/right-swapped labelling scores
better against the annotation, ``semalign3d.evaluate.AlignmentScore.mirrored``) has been
relabelled so. It asks how much of the gap a perfect twin resolution could close, and prints the
per-image PCK@0.1 (overall / viewpoint variation 2) beside the run's own.

    python bench/partner_errors.py --root data/synthetic --category bottle runs/test
    python bench/partner_errors.py --root data/synthetic --category bottle --relabel-truth runs/test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from semalign3d.align.optimize import Alignment
from semalign3d.align.profiles import category_config
from semalign3d.config import Config, load_yaml
from semalign3d.data.flips import flip_permutation, partner_positions
from semalign3d.data.spair import SPairDataset
from semalign3d.evaluate import partner_misses, score_predictions
from semalign3d.experiment import RunDir, alignment_scores, encode, predict_pair, viewpoint_table
from semalign3d.prior.representation import ClassRepresentation


def breakdown(root: Path, split: str, category: str, predictions: dict[str, list],
              alpha: float = 0.1, comparison: str = "<=") -> dict[str, float]:
    """``{"keypoints", "right", "at_partner", "elsewhere"}`` (the last three in percent) of one
    method's predictions ``{pair name: [[x, y], ...]}``."""
    ds = SPairDataset(root)
    perm = flip_permutation(category)
    counts = torch.zeros(3, dtype=torch.long)
    for name, pred in predictions.items():
        pair = ds.pair(split, name)
        target = ds.image(category, pair.target)
        nan = torch.full((2,), float("nan"), dtype=torch.float64)
        partner = torch.stack([
            target.keypoints[int(perm[k])].double() if int(perm[k]) != k else nan
            for k in pair.kps_ids
        ]) if pair.kps_ids else torch.zeros(0, 2, dtype=torch.float64)
        ok, at_partner = partner_misses(torch.tensor(pred, dtype=torch.float64).reshape(-1, 2),
                                        pair.trg_kps.double(), partner, pair.trg_bbox_size,
                                        alpha, comparison)
        counts += torch.stack([ok.sum(), at_partner.sum(), (~ok & ~at_partner).sum()])
    n = int(counts.sum())
    pct = (100.0 * counts.double() / max(n, 1)).tolist()
    return {"keypoints": n, "right": pct[0], "at_partner": pct[1], "elsewhere": pct[2]}


def relabelled_predictions(root: Path, split: str, category: str, run: Path, config: Config
                           ) -> tuple[dict[str, list], float, float, int]:
    """SemAlign3D's predictions of ``run`` redone with every mirror-twin fit relabelled.

    Returns:
        ``(predictions, per-image PCK@0.1, the same on viewpoint variation 2, fits
        relabelled)``.
    """
    rd = RunDir(run)
    rep = ClassRepresentation.load(rd.prior(category))
    files = sorted(rd.alignment(category, "x").parent.glob("*.json"))
    fits = {f.stem: Alignment.from_dict(json.loads(f.read_text())) for f in files}
    swap = partner_positions(category, rep.keypoint_ids)
    mirrored = {s.name for s in alignment_scores(root, rep, fits) if s.mirrored}
    fits = {n: a if n not in mirrored else Alignment(
        a.name, a.height, a.width, a.keypoints[swap], a.focal, a.keypoints_2d[swap], a.energy,
        a.terms, a.hypothesis, a.final_energies) for n, a in fits.items()}
    ds = SPairDataset(root)
    pairs = ds.pairs(split, category)
    descriptors = dict(zip(fits, encode([ds.image(category, n) for n in fits], config, root,
                                        rd, progress=False), strict=True))
    cfg = category_config(category, config.align, "cpu")  # the matching ignores the run size
    preds = {p.name: predict_pair("semalign3d", p, descriptors[p.source], descriptors[p.target],
                                  cfg, rep, fits).double().tolist() for p in pairs}
    scores, _ = score_predictions(pairs, preds, config.eval.alphas, config.eval.comparison)
    per_image = [float(s.correct[0].double().mean()) for s in scores if s.correct.shape[1]]
    by_vv = viewpoint_table(scores)
    return (preds, 100.0 * sum(per_image) / max(len(per_image), 1),
            by_vv.get("2", float("nan")), len(mirrored))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, type=Path, help="SPair-layout dataset root")
    p.add_argument("--category", required=True)
    p.add_argument("--split", default="test", choices=("trn", "val", "test"))
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--relabel-truth", action="store_true",
                   help="also redo SemAlign3D's matching with every mirror-twin fit relabelled")
    p.add_argument("--config", type=Path, default=None,
                   help="YAML Config of the runs (default: the defaults; for --relabel-truth)")
    p.add_argument("runs", nargs="+", type=Path, help="run directories (semalign3d evaluate --out)")
    args = p.parse_args(argv)
    config = load_yaml(Config, args.config) if args.config else Config()
    print(f"{'run':<40} {'method':<11} {'keypoints':>9} {'right':>7} {'at partner':>11} "
          f"{'elsewhere':>10}")
    for run in args.runs:
        files = sorted((run / "predictions").glob(f"*/{args.category}.json"))
        if not files:
            raise SystemExit(f"{run}: no predictions/<method>/{args.category}.json")
        for f in files:
            b = breakdown(args.root, args.split, args.category, json.loads(f.read_text()),
                          args.alpha)
            print(f"{str(run)[-40:]:<40} {f.parent.name:<11} {b['keypoints']:>9d} "
                  f"{b['right']:>7.1f} {b['at_partner']:>11.1f} {b['elsewhere']:>10.1f}")
        if args.relabel_truth:
            preds, pck, pck_vv2, n = relabelled_predictions(args.root, args.split, args.category,
                                                             run, config)
            b = breakdown(args.root, args.split, args.category, preds, args.alpha)
            print(f"{str(run)[-40:]:<40} {'relabelled':<11} {b['keypoints']:>9d} "
                  f"{b['right']:>7.1f} {b['at_partner']:>11.1f} {b['elsewhere']:>10.1f}"
                  f"   ({n} fits relabelled; per-image PCK {pck:.1f} / vv2 {pck_vv2:.1f})")


if __name__ == "__main__":
    main()
