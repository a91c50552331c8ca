"""Synthetic dataset figures: generation time and the nearest-neighbour left/right gap.

    python bench/synthetic.py --out /tmp/synth [--categories chair,bottle]

Prints the time to render the default set and NN PCK@0.1 (per image) by viewpoint-change bucket
for mirror-symmetric (symmetry=1) vs left/right-aware (symmetry=0) oracle features: the gap the
3D alignment has to close.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from semalign3d.data.spair import SPairDataset
from semalign3d.data.synthetic import SynthConfig, generate_dataset
from semalign3d.evaluate import correct_keypoints
from semalign3d.match import nn_match
from semalign3d.models.oracle import OracleEncoder


def nn_pck_by_bucket(root: str, category: str, symmetry: float) -> dict[int, float]:
    ds = SPairDataset(root)
    enc = OracleEncoder(root, symmetry=symmetry)
    maps: dict[str, object] = {}
    sums: dict[int, list[float]] = defaultdict(list)
    for p in ds.pairs("test", category):
        for n in (p.source, p.target):
            if n not in maps:
                maps[n] = enc.encode([ds.image(category, n)])[0]
        pred = nn_match(maps[p.source], maps[p.target], p.src_kps)
        ok = correct_keypoints(pred, p.trg_kps, p.trg_bbox_size, alphas=(0.1,))[0]
        sums[p.viewpoint_variation].append(float(ok.double().mean()))
    return {k: 100 * sum(v) / len(v) for k, v in sorted(sums.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="where to render the dataset")
    ap.add_argument("--categories", default=None, help="comma-separated (default: all four)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = SynthConfig()
    if args.categories:
        cfg = SynthConfig(categories=tuple(args.categories.split(",")))
    t = time.perf_counter()
    generate_dataset(args.out, cfg, progress=False)
    print(f"generated {args.out} in {time.perf_counter() - t:.1f} s")
    print("NN PCK@0.1 per image by viewpoint_variation (0 small .. 2 large)")
    for cat in SPairDataset(args.out).categories:
        row = {s: nn_pck_by_bucket(args.out, cat, s) for s in (0.0, 1.0)}
        cells = "  ".join(f"sym={s:g}: " + " ".join(f"{v:5.1f}" for v in r.values())
                          for s, r in row.items())
        print(f"{cat:<10} {cells}")


if __name__ == "__main__":
    main()
