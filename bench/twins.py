"""How often are the fits mirror twins, and can the fits' facing or energy tell? (chapter 7)

With mirror-symmetric descriptors a fit can be the mirror twin of the true pose: every keypoint
where its left/right partner is. For each evaluated run directory this prints

* the share of twin fits (the partner-swapped labelling scores better against the annotation);
* over the partner pairs of which the annotation shows one keypoint and hides the other, how
  often the fit turns the shown one further towards the camera (facing cosine,
  ``semalign3d.align.visibility.facing_cosine``), for correct fits, twin fits and, on synthetic
  data, the true poses: what the Eq. 14 partner landing (``align.partner_swap``) relies on.

With ``--energies`` and two runs of the same images (for instance ``bench/oracle_start.py`` from
the true pose and with ``--twin``), it also counts the images whose final energy is lower in the
first run.

    python bench/twins.py --root data/synval120 --category bottle runs/val
    python bench/twins.py --root data/synval120 --category bottle --energies \\
        runs/oracle runs/oracle-twin
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from semalign3d.align.optimize import Alignment
from semalign3d.data.flips import partner_positions
from semalign3d.data.spair import SPairDataset
from semalign3d.experiment import RunDir, alignment_scores, keypoint_facing_cosine
from semalign3d.prior.representation import ClassRepresentation


def load(run: Path, category: str) -> dict[str, Alignment]:
    files = sorted((run / "alignments" / category).glob("*.json"))
    if not files:
        raise SystemExit(f"no alignments under {run / 'alignments' / category}")
    return {f.stem: Alignment.from_dict(json.loads(f.read_text())) for f in files}


def facing_split(root: Path, rep: ClassRepresentation, alignments: dict[str, Alignment]
                 ) -> dict[str, tuple[int, int]]:
    """``{"correct" | "twin" | "truth": (one-sided partner pairs, pairs whose shown keypoint
    faces the camera more)}``; "truth" uses the true camera-frame keypoints of a synthetic
    dataset (absent without them)."""
    ds = SPairDataset(root)
    partner = partner_positions(rep.category, rep.keypoint_ids)
    scores = {s.name: s for s in alignment_scores(root, rep, alignments)}
    out: dict[str, list[int]] = {"correct": [0, 0], "twin": [0, 0]}

    def count(key: str, kp: torch.Tensor, shown: torch.Tensor) -> None:
        cos = keypoint_facing_cosine(rep, kp)
        for k in range(kp.shape[0]):
            j = int(partner[k])
            if j != k and shown[k] and not shown[j]:
                out.setdefault(key, [0, 0])[0] += 1
                out[key][1] += int(cos[k] > cos[j])

    for name, a in alignments.items():
        shown = ~torch.isnan(ds.image(rep.category, name).keypoints[rep.keypoint_ids][:, 0])
        twin = scores[name].pck_mirrored > scores[name].pck
        count("twin" if twin else "correct", a.keypoints, shown)
        truth = root / "Synthetic" / rep.category / f"{name}.npz"
        if truth.is_file():
            cam = torch.from_numpy(np.load(truth)["keypoints_camera"])
            count("truth", cam[rep.keypoint_ids], shown)
    return {key: (n, ok) for key, (n, ok) in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path, help="synthetic dataset root")
    p.add_argument("--category", required=True)
    p.add_argument("runs", nargs="+", type=Path, help="run directories of evaluated images")
    p.add_argument("--energies", action="store_true",
                   help="also compare the final energies of exactly two runs image by image")
    a = p.parse_args()
    if a.energies and len(a.runs) != 2:
        p.error("--energies compares exactly two runs")
    fits = {}
    for run in a.runs:
        rep = ClassRepresentation.load(RunDir(run).prior(a.category))
        if rep.sparse_facing.shape[0] != rep.sparse_xyz.shape[0]:
            raise SystemExit(f"{RunDir(run).prior(a.category)} has no keypoint facing vectors")
        fits[run] = load(run, a.category)
        scores = [s for s in alignment_scores(a.root, rep, fits[run]) if s.n > 0]
        twins = sum(s.pck_mirrored > s.pck for s in scores)
        split = facing_split(a.root, rep, fits[run])
        print(f"{run}: {twins} of {len(scores)} fits are twins")
        for key, (n, ok) in split.items():
            who = "the true poses" if key == "truth" else f"{key} fits"
            print(f"  {who}: the shown keypoint of a one-sided partner pair faces the camera "
                  f"more in {ok} of {n} pairs")
    if a.energies:
        first, second = (fits[r] for r in a.runs)
        common = sorted(set(first) & set(second))
        lower = sum(float(first[n].energy[-1]) < float(second[n].energy[-1]) for n in common)
        print(f"final energy lower in {a.runs[0]} than in {a.runs[1]}: {lower} of {len(common)} "
              "images")


if __name__ == "__main__":
    main()
