"""``semalign3d evaluate``: align the test images of a category, match every test pair with the
nearest-neighbour baseline and SemAlign3D (Eq. 14), and print PCK side by side.

``--category all`` runs the 18 SPair-71k categories with the paper's models (GeoAware-SC
descriptors, Depth Anything V2) unless ``--encoder``/``--config`` say otherwise, and prints the
paper's Table 1 layout with our numbers beside the paper's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: the paper's Table 1 row for SemAlign3D (method.md §4.1), PCK@0.1 per image
PAPER_TABLE1 = {
    "aeroplane": 95.6, "bicycle": 80.4, "bird": 94.0, "boat": 66.5, "bottle": 82.2, "bus": 92.6,
    "car": 92.5, "cat": 91.4, "chair": 88.3, "cow": 96.1, "dog": 91.3, "horse": 87.4,
    "motorbike": 84.2, "person": 92.3, "pottedplant": 87.7, "sheep": 85.3, "train": 95.9,
    "tvmonitor": 96.1, "all": 88.9,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, type=Path, help="SPair-layout dataset root")
    p.add_argument("--category", required=True,
                   help="category name, a comma-separated list, or 'all' (18 SPair categories)")
    p.add_argument("--method", choices=["semalign3d", "nn", "both"], default="both",
                   help="matcher(s) to evaluate (default: both)")
    p.add_argument("--encoder", default=None, help="override config.encoder.name")
    p.add_argument("--depth", default=None, help="override config.depth.name")
    p.add_argument("--config", type=Path, default=None, help="YAML with a full Config")
    p.add_argument("--profile", choices=["cpu", "paper"], default="cpu",
                   help="alignment size: 'cpu' (400 steps, 30x30 grid, 300 dense points) or "
                   "'paper' (Table 5's 1000 steps, full size; GPU)")
    p.add_argument("--split", default="test", choices=["trn", "val", "test"])
    p.add_argument("--steps", type=int, default=None,
                   help="override the profile's step count (schedules keep Table 5's shape)")
    p.add_argument("--max-pairs", type=int, default=None, help="only the first N pairs")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"),
                   help="run directory (prior, caches, alignments, predictions); reruns resume")
    p.add_argument("--json", type=Path, default=None,
                   help="write {method: eval-pairs summary} here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _categories(arg: str, root: Path) -> list[str]:
    from semalign3d.data import flips

    if arg == "all":
        return flips.categories()
    return [c for c in arg.split(",") if c]


def table1(summary: dict) -> str:
    """Table 1 layout: PCK@0.1 per image by category, ours beside the paper's."""
    ours = summary.get("semalign3d", {}).get("per_image", {})
    nn = summary.get("nn", {}).get("per_image", {})
    lines = [f"{'category':<14}{'paper':>8}{'ours':>8}{'NN':>8}"]
    for cat, ref in PAPER_TABLE1.items():
        key = "all_mean_of_categories" if cat == "all" else cat
        o = f"{ours[key]:8.1f}" if key in ours else f"{'-':>8}"
        b = f"{nn[key]:8.1f}" if key in nn else f"{'-':>8}"
        lines.append(f"{cat:<14}{ref:8.1f}{o}{b}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from semalign3d.config import Config, load_yaml, replace
    from semalign3d.evaluate import format_table
    from semalign3d.experiment import evaluate_category, summaries
    from semalign3d.io import write_json

    config = load_yaml(Config, args.config) if args.config else Config()
    cats = _categories(args.category, args.root)
    if args.category == "all" and args.config is None:
        # the paper's models (method.md §2.2-2.3)
        config = replace(config, encoder=replace(config.encoder, name=args.encoder or "geoaware"),
                         depth=replace(config.depth, name=args.depth or "depth_anything"))
    if args.encoder:
        config = replace(config, encoder=replace(config.encoder, name=args.encoder))
    if args.depth:
        config = replace(config, depth=replace(config.depth, name=args.depth))
    methods = ["nn", "semalign3d"] if args.method == "both" else [args.method]
    if args.category == "all":
        from semalign3d.data.spair import SPairDataset

        ds = SPairDataset(args.root)
        missing = [c for c in cats if not ds.pair_names(args.split, c)]
        if missing:
            print(f"skipping categories without '{args.split}' pairs: {', '.join(missing)}")
        cats = [c for c in cats if c not in missing]
    results = [
        evaluate_category(args.root, c, config, args.out, methods, args.profile, args.split,
                          args.max_pairs, progress=not args.quiet, steps=args.steps)
        for c in cats
    ]
    summary = summaries(results, config)
    for m in methods:
        print(format_table(summary[m], title=f"== {m} ({args.split}, profile {args.profile}) =="))
        print()
    alpha = f"{config.eval.alphas[0]:g}"
    print(f"PCK@{alpha} per image by viewpoint_variation (0 small .. 2 large):")
    print(f"{'bucket':<8}" + "".join(f"{m:>12}" for m in methods))
    buckets = sorted({b for m in methods for b in summary[m]["by_viewpoint"]})
    for b in buckets:
        vals = "".join(f"{summary[m]['by_viewpoint'].get(b, float('nan')):12.1f}" for m in methods)
        print(f"{b:<8}{vals}")
    if args.category == "all":
        print()
        print(table1(summary))
    if args.json:
        write_json(args.json, summary)
    return 0
