"""``semalign3d prior build``: build one category's 3D object-class representation."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="prior_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build the representation of one category")
    b.add_argument("--root", required=True, help="SPair-layout dataset root")
    b.add_argument("--category", required=True, help="category name, e.g. chair")
    b.add_argument("--out", required=True, help="output .safetensors file")
    b.add_argument("--config", help="YAML file with a full Config (strict keys)")
    b.add_argument("--encoder", help="override config.encoder.name (e.g. oracle, geoaware)")
    b.add_argument("--depth", help="override config.depth.name (e.g. synthetic, depth_anything)")
    b.add_argument("--cache", help="descriptor cache folder (default: no cache)")
    b.add_argument("--quiet", action="store_true", help="no per-stage progress output")


def _summary(rep) -> str:
    m = rep.meta
    rel = m["relations"]
    lines = [
        f"category        {rep.category}",
        f"images used     {len(m['images_used'])}   skipped {len(m['images_skipped'])}",
        f"keypoints       {rep.num_keypoints} (ids {rep.keypoint_ids.tolist()})",
        f"edge relations  {rel['edges_kept']} / {rel['edges_total']} kept",
        f"tet relations   {rel['tets_kept']} / {rel['tets_total']} kept",
        f"dense points    {rep.num_dense} (from {m['dense_points_merged']} merged points)",
        f"geometric NLL   {m['refine']['nll_initial']:.3f} -> {m['refine']['nll_final']:.3f}",
        "timings (s)     "
        + ", ".join(f"{k} {v:.1f}" for k, v in {**m["load_timings_s"], **m["timings_s"]}.items()),
    ]
    for key, why in m["images_skipped"].items():
        lines.append(f"  skipped {key}: {why}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from semalign3d.config import Config, load_yaml, replace
    from semalign3d.prior.build import build_from_dataset

    config = load_yaml(Config, args.config) if args.config else Config()
    if args.encoder:
        config = replace(config, encoder=replace(config.encoder, name=args.encoder))
    if args.depth:
        config = replace(config, depth=replace(config.depth, name=args.depth))
    rep = build_from_dataset(
        args.root, args.category, config, cache_dir=args.cache, progress=not args.quiet
    )
    path = rep.save(args.out)
    print(_summary(rep))
    print(f"wrote {path}")
    return 0
