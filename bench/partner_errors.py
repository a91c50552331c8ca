"""Where do the misses go? Keypoint-level breakdown of evaluated runs (chapter 7).

For each run directory written by ``semalign3d evaluate --out RUN`` and each method in it, every
scored keypoint of every pair is counted once as

* right: within ``alpha * max(w, h)`` of the target box (``semalign3d.evaluate``'s rule);
* at the partner: wrong, but as close to the keypoint's left/right partner in the target
  (``semalign3d.evaluate.partner_misses``): the side was missed, not the place;
* elsewhere: every other miss, including one on a partner the target's annotation does not show
  (hidden partners have no position to compare with).

The figures are pooled over keypoints (``per_keypoint``), so they differ slightly from the
per-image PCK of the summary tables.

``--relabel-truth`` adds a row per run: SemAlign3D's matching (Eq. 14 with the configured
landing) redone after every fit that is a mirror twin (its left/right-swapped labelling scores
better against the annotation, ``semalign3d.evaluate.AlignmentScore.mirrored``) has been
relabelled so, on the pairs the run predicted. It asks what the twins cost the run (relabelling
is no upper bound: a relabelled fit can land worse), and prints the per-image PCK at ``alpha``
(overall / viewpoint variation 2) beside the run's own.

    python bench/partner_errors.py --root data/synthetic --category bottle runs/test
    python bench/partner_errors.py --root data/synthetic --category bottle --relabel-truth runs/test
"""

from __future__ import annotations

import argparse
import dataclasses
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
    nan = torch.full((2,), float("nan"), dtype=torch.float64)
    counts = torch.zeros(3, dtype=torch.long)
    for name, pred in predictions.items():
        pair = ds.pair(split, name)
        target = ds.image(category, pair.target)
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


def relabel_twins(root: Path, rep: ClassRepresentation, fits: dict[str, Alignment]
                  ) -> tuple[dict[str, Alignment], set[str]]:
    """``fits`` with every mirror twin's keypoints swapped with their left/right partners (its
    energy trace still describes the fit as it was), and the names of those fits."""
    swap = partner_positions(rep.category, rep.keypoint_ids)
    twins = {s.name for s in alignment_scores(root, rep, fits) if s.mirrored}
    return {n: dataclasses.replace(a, keypoints=a.keypoints[swap],
                                   keypoints_2d=a.keypoints_2d[swap]) if n in twins else a
            for n, a in fits.items()}, twins


def relabelled_predictions(root: Path, split: str, category: str, run: Path, config: Config,
                           alpha: float = 0.1, comparison: str = "<="
                           ) -> tuple[dict[str, list], float, float, int]:
    """SemAlign3D's predictions of ``run`` redone, on the pairs it predicted, after relabelling
    the twins among their images' fits (:func:`relabel_twins`).

    Returns:
        ``(predictions, per-image PCK at alpha, the same on viewpoint variation 2, fits
        relabelled)``.
    """
    rd = RunDir(run)
    rep = ClassRepresentation.load(rd.prior(category))
    ds = SPairDataset(root)
    done = json.loads(rd.predictions("semalign3d", category).read_text())
    pairs = [ds.pair(split, name) for name in done]
    names = list(dict.fromkeys(n for p in pairs for n in (p.source, p.target)))
    fits = {n: Alignment.from_dict(json.loads(rd.alignment(category, n).read_text()))
            for n in names}
    fits, twins = relabel_twins(root, rep, fits)
    descriptors = dict(zip(names, encode([ds.image(category, n) for n in names], config, root,
                                         rd, progress=False), strict=True))
    cfg = category_config(category, config.align, "cpu")  # the matching ignores the run size
    preds = {p.name: predict_pair("semalign3d", p, descriptors[p.source], descriptors[p.target],
                                  cfg, rep, fits).double().tolist() for p in pairs}
    scores, _ = score_predictions(pairs, preds, (alpha,), comparison)
    per_image = [float(s.correct[0].double().mean()) for s in scores if s.correct.shape[1]]
    by_vv = viewpoint_table(scores)
    return (preds, 100.0 * sum(per_image) / max(len(per_image), 1),
            by_vv.get("2", float("nan")), len(twins))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, type=Path, help="SPair-layout dataset root")
    p.add_argument("--category", required=True)
    p.add_argument("--split", default="test", choices=("trn", "val", "test"))
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--comparison", default="<=", choices=("<=", "<"),
                   help="threshold rule (semalign3d.evaluate.correct_keypoints)")
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
                          args.alpha, args.comparison)
            print(f"{str(run)[-40:]:<40} {f.parent.name:<11} {b['keypoints']:>9d} "
                  f"{b['right']:>7.1f} {b['at_partner']:>11.1f} {b['elsewhere']:>10.1f}")
        if args.relabel_truth:
            preds, pck, pck_vv2, n = relabelled_predictions(
                args.root, args.split, args.category, run, config, args.alpha, args.comparison)
            b = breakdown(args.root, args.split, args.category, preds, args.alpha,
                          args.comparison)
            print(f"{str(run)[-40:]:<40} {'relabelled':<11} {b['keypoints']:>9d} "
                  f"{b['right']:>7.1f} {b['at_partner']:>11.1f} {b['elsewhere']:>10.1f}"
                  f"   ({n} fits relabelled; per-image PCK {pck:.1f} / vv2 {pck_vv2:.1f})")


if __name__ == "__main__":
    main()
