"""``semalign3d eval-pairs``: score a predictions file with PCK (predictions are exported once and
evaluated separately, as in glue-factory)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, type=Path, help="SPair-71k layout root")
    p.add_argument("--split", default="test", choices=["trn", "val", "test"], help="pair split")
    p.add_argument("--category", default=None, help="only this category (default: all)")
    p.add_argument(
        "--predictions",
        required=True,
        type=Path,
        help="JSON mapping pair file name (no .json) to predicted target keypoints "
        "[[x, y], ...] in the pair's kps_ids order, in original-image pixels",
    )
    p.add_argument(
        "--alpha",
        type=float,
        nargs="+",
        default=None,
        help="PCK thresholds as fractions of max(w, h) of the target box; the first is the "
        "headline one (default: 0.1 0.05 0.01 0.15)",
    )
    p.add_argument(
        "--comparison",
        choices=["<=", "<"],
        default="<=",
        help="correct when distance <= threshold (default, DIFT) or < (GeoAware-SC)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the summary JSON here")


def run(args: argparse.Namespace) -> int:
    from semalign3d.data.records import DataError
    from semalign3d.data.spair import SPairDataset
    from semalign3d.evaluate import DEFAULT_ALPHAS, format_table, score_predictions, summarize
    from semalign3d.io import write_json

    try:
        predictions = json.loads(args.predictions.read_text())
    except FileNotFoundError as e:
        raise DataError(f"{args.predictions}: predictions file not found") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{args.predictions}: not valid JSON ({e})") from e
    if not isinstance(predictions, dict):
        raise DataError(f"{args.predictions}: expected a JSON object pair-name -> points")
    ds = SPairDataset(args.root)
    names = ds.pair_names(args.split, args.category)
    if not names:
        raise DataError(f"{args.root}: split '{args.split}' has no pairs"
                        + (f" of category '{args.category}'" if args.category else ""))
    alphas = tuple(args.alpha) if args.alpha else DEFAULT_ALPHAS
    scores, skipped = score_predictions(
        (ds.pair(args.split, n) for n in names), predictions, alphas, args.comparison
    )
    summary = summarize(scores, alphas, len(skipped))
    summary["comparison"] = args.comparison
    print(format_table(summary, f"PCK on {args.root} split={args.split}"))
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"skipped {len(skipped)} pair(s) without a prediction: {shown}")
    if args.json:
        write_json(args.json, summary)
        print(f"wrote {args.json}")
    return 0
