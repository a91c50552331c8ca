"""``semalign3d data synth|preview``: the synthetic object-class dataset."""

from __future__ import annotations

import argparse

SYNTH_HELP = """\
Render the procedurally generated dataset: mirror-symmetric chairs, bottles, TV monitors and
aeroplanes with exact ground truth, written in the SPair-71k layout (JPEGImages/,
ImageAnnotation/, PairAnnotation/, Layout/, Segmentation/) plus Oracle/ (read by the 'oracle'
encoder and the 'synthetic' depth model) and Synthetic/ (ground truth for tests and the book).
The same seed gives byte-identical files; an interrupted run resumes where it stopped.
"""


def _categories(text: str) -> tuple[str, ...]:
    cats = tuple(c.strip() for c in text.split(",") if c.strip())
    if not cats:
        raise argparse.ArgumentTypeError("give at least one category, e.g. chair,bottle")
    return cats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "synth",
        help="generate the synthetic dataset",
        description=SYNTH_HELP,
    )
    s.add_argument("--out", default="data/synthetic", help="dataset root to write (default "
                   "data/synthetic)")
    s.add_argument(
        "--categories",
        type=_categories,
        help="comma-separated shape families (default aeroplane,bottle,chair,tvmonitor)",
    )
    # defaults live in SynthConfig / OracleKnobs / DepthKnobs; an option left out keeps them
    s.add_argument("--seed", type=int, help="master seed (default 0)")
    s.add_argument("--n-train", type=int, help="train images per category (default 50)")
    s.add_argument("--n-val", type=int, help="val images per category (default 5)")
    s.add_argument("--n-test", type=int, help="test images per category (default 30)")
    s.add_argument("--n-test-pairs", type=int, help="test pairs per category (default 120)")
    s.add_argument(
        "--symmetry",
        type=float,
        help="oracle features: 0 = left/right distinguishable, 1 = mirror-symmetric like real "
        "LVMs (default 1)",
    )
    s.add_argument(
        "--noise", type=float, help="oracle feature noise per dimension, scaled by 1/sqrt(C) "
        "(default 0.5)"
    )
    s.add_argument("--channels", type=int, help="oracle descriptor dimension C (default 64)")
    s.add_argument(
        "--depth-error",
        type=float,
        help="smooth relative error of the simulated monocular depth (default 0.01)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser(
        "preview",
        help="save a grid figure of images with keypoints and masks",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--root", default="data/synthetic", help="SPair-layout dataset root")
    p.add_argument("--out", default="synthetic_grid.png", help="PNG file to write")
    p.add_argument("--categories", type=_categories, default=None, help="rows (default: all)")
    p.add_argument("--per-category", type=int, default=4, help="images per row")
    p.add_argument("--split", default="test", choices=("trn", "val", "test"))


def _synth(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace

    from semalign3d.data.synthetic.generate import SynthConfig, generate_dataset

    def given(**options):
        return {k: v for k, v in options.items() if v is not None}

    base = SynthConfig()
    cfg = replace(
        base,
        **given(categories=args.categories, seed=args.seed, n_train=args.n_train,
                n_val=args.n_val, n_test=args.n_test, n_test_pairs=args.n_test_pairs),
        oracle=replace(base.oracle, **given(symmetry=args.symmetry, noise=args.noise,
                                            channels=args.channels)),
        depth=replace(base.depth, **given(error=args.depth_error)),
    )
    cats = cfg.categories
    t0 = time.perf_counter()
    summary = generate_dataset(args.out, cfg, progress=not args.quiet)
    dt = time.perf_counter() - t0
    print(
        f"wrote {args.out} in {dt:.1f} s "
        f"({summary['rendered']} images rendered, {summary['skipped']} already there)"
    )
    print(
        f"{'category':<12}{'images trn':>11}{'val':>5}{'test':>6}   {'pairs trn':>9}"
        f"{'val':>5}{'test':>6}"
    )
    for cat in cats:
        im, pr = summary["images"][cat], summary["pairs"][cat]
        print(
            f"{cat:<12}{im['trn']:>11}{im['val']:>5}{im['test']:>6}   {pr['trn']:>9}"
            f"{pr['val']:>5}{pr['test']:>6}"
        )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from semalign3d.data.synthetic.preview import preview_grid

    preview_grid(args.root, args.categories, args.per_category, args.split, out=args.out)
    print(f"wrote {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    return _preview(args)
