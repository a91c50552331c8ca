"""Does the energy keep the true pose? Align every image from its true pose and score the pairs.

On synthetic data every image's true keypoints are known. This starts each alignment from the
representation's canonical keypoints fitted (least-squares similarity) to them, at the true focal
length, runs the configured schedule from there, and scores the pairs with Eq. 14 like
``semalign3d evaluate``. ``--start-only`` scores the start itself (no step is taken); ``--twin``
starts from the true pose's mirror twin instead (every keypoint where its left/right partner is;
``bench/twins.py`` compares the two runs' final energies).

How to read it: the start-only PCK is what a perfect pose gives; a drop from it to the optimised
PCK is the energy's bias (its minimum lies elsewhere); a gap from the optimised PCK down to
``semalign3d evaluate``'s is the search's (the default start did not reach that basin).

    semalign3d evaluate --root data/synval120 --category bottle --split val --out runs/val
    python bench/oracle_start.py --root data/synval120 --run runs/val --category bottle \\
        --split val --out runs/oracle
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from semalign3d.align.hypotheses import Hypotheses
from semalign3d.align.profiles import PROFILES, category_config
from semalign3d.book.pipeline import true_pose
from semalign3d.config import Config, load_yaml, replace
from semalign3d.data.flips import partner_positions
from semalign3d.data.records import AnnotatedImage
from semalign3d.data.spair import SPairDataset
from semalign3d.experiment import RunDir, align_images, encode, evaluate_category, summaries
from semalign3d.io import write_json
from semalign3d.prior.representation import ClassRepresentation


def true_start(rep: ClassRepresentation, root: Path, image: AnnotatedImage,
               z_bar: torch.Tensor, twin: bool = False) -> Hypotheses:
    """One hypothesis: the canonical keypoints posed like the object of a synthetic image
    (:func:`semalign3d.book.pipeline.true_pose`) at the depth gauge's ``z_bar`` (0-d), with the
    true focal length, or that pose's mirror twin (``twin``: keypoints swapped with their
    left/right partners). Returns ``keypoints [1 x 1 x K x 3]``, ``focal_inv [1 x 1]`` on
    ``z_bar``'s device and dtype (the rotation is unused by :func:`align`: identity)."""
    keypoints, focal = true_pose(rep, root, image, float(z_bar))
    if twin:
        keypoints = keypoints[partner_positions(rep.category, rep.keypoint_ids)]
    dev, dt = z_bar.device, z_bar.dtype
    return Hypotheses(keypoints.to(dev, dt)[None, None],
                      torch.full((1, 1), 1.0 / focal, device=dev, dtype=dt),
                      torch.eye(3, device=dev, dtype=dt)[None, None],
                      torch.ones(1, dtype=torch.bool, device=dev))


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
    p.add_argument("--twin", action="store_true",
                   help="start from the mirror twin of the true pose (partners swapped)")
    p.add_argument("--start-only", action="store_true",
                   help="score the true-pose start itself (no optimisation step)")
    a = p.parse_args()
    config = load_yaml(Config, a.config) if a.config else Config()
    # one thread on the CPU, like the figures it is compared with
    cfg = replace(category_config(a.category, config.align, a.profile), device="cpu")
    if a.start_only:
        cfg = replace(cfg, n_steps=1, lr=0.0)
    if a.out.resolve() == a.run.resolve():
        raise SystemExit("--out must be a directory of its own: the oracle alignments would "
                         f"replace the ordinary ones of {a.run}")
    shared, out = RunDir(a.run), RunDir(a.out)
    if not shared.prior(a.category).is_file():
        raise SystemExit(f"{shared.prior(a.category)} is missing: run 'semalign3d evaluate "
                         f"--out {a.run}' on this category first")
    # cached alignments are only reused for the same setting: a stamp records it
    setting = {"run": str(a.run.resolve()), "start_only": a.start_only, "twin": a.twin,
               "profile": a.profile,
               "config": json.loads(json.dumps(dataclasses.asdict(config), default=str))}
    stamp = a.out / f"oracle_{a.category}.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != setting:
        raise SystemExit(f"{a.out} holds oracle alignments of another setting ({stamp}); "
                         "pass a fresh --out")
    write_json(stamp, setting)
    for src, dst in ((shared.prior(a.category), out.prior(a.category)),
                     (shared.features, out.features)):
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve())
    rep = ClassRepresentation.load(out.prior(a.category))
    ds = SPairDataset(a.root)
    pairs = ds.pairs(a.split, a.category)
    names = list(dict.fromkeys(n for pr in pairs for n in (pr.source, pr.target)))
    missing = [n for n in names if not (a.root / "Synthetic" / a.category / f"{n}.npz").is_file()]
    if missing:
        raise SystemExit(f"{a.root / 'Synthetic' / a.category / (missing[0] + '.npz')} is missing "
                         f"({len(missing)} images): --root must be a synthetic dataset "
                         "('semalign3d data synth') whose truth records are kept")
    images = [ds.image(a.category, n) for n in names]
    descriptors = encode(images, config, a.root, out, progress=False)
    align_images(images, descriptors, rep, cfg, config, a.root, out,
                 start=lambda im, batch: true_start(rep, a.root, im, batch.z_bar[0], a.twin))
    # every image is aligned now, so evaluation only matches and scores
    r = evaluate_category(a.root, a.category, config, out.root, methods=("semalign3d",),
                          split=a.split, progress=False, align_config=cfg)
    s = summaries([r], config)["semalign3d"]
    pose = "the twin of the true pose" if a.twin else "the true pose"
    label = f"start at {pose}" if a.start_only else f"optimised from {pose}"
    print(f"{a.category} ({a.split}, {len(pairs)} pairs), {label}: per-image PCK@0.1 "
          f"{s['per_image']['all']:.1f}; by viewpoint variation "
          + json.dumps({k: round(v, 1) for k, v in s["by_viewpoint"].items()}))


if __name__ == "__main__":
    main()
