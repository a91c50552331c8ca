"""Ablation of the reconstructed choices (method.md §5.2) on synthetic VALIDATION pairs.

For every category and variant (one change against the defaults) the whole pipeline runs on the
``val`` split with the CPU profile; the prior and descriptors are shared between variants, and
variants that only change matching reuse the default's alignments. Prints a markdown table of
per-image PCK@0.1 (overall / on viewpoint_variation 2) and writes all figures as JSON after each
run (``--summarize`` reprints the table of a partial or finished JSON).

    python bench/ablation.py --root /tmp/syn --categories chair bottle --out ablation.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from semalign3d.config import (
    MATCHING_ONLY,
    AlignConfig,
    Config,
    ConfigError,
    PriorConfig,
    replace,
)
from semalign3d.experiment import RunDir, alignment_scores, evaluate_category, summaries
from semalign3d.io import write_json
from semalign3d.prior.representation import ClassRepresentation

#: name -> AlignConfig changes (variants that change only the matching reuse the default's
#: alignments, see :func:`matching_only`)
VARIANTS: dict[str, dict] = {
    "default": {},  # must come first: matching-only variants reuse its alignments
    "no visibility": {"visibility_radius": 0.0},
    "no depth order": {"w_depth_order": 0.0},
    "neither tie-breaker": {"visibility_radius": 0.0, "w_depth_order": 0.0},
    "p_sem gaussian": {"p_sem": "gaussian"},
    "dense: points": {"dense_likelihood": "points"},
    "sparse: pixels": {"sparse_likelihood": "pixels", "sparse_cells": "foreground"},
    "+ mirrored hyps": {"mirror_hypotheses": True},
    "no chirality": {"w_chirality": 0.0},
    "no facing": {"facing_tau": 0.0},
    # starting poses: the default is one fitted start entering the schedules at 0.75
    "fitted 2": {"n_fitted_starts": 2},
    "fitted 4": {"n_fitted_starts": 4},
    "fitted: 480 candidates": {"fit_candidates": 480},
    "fitted: schedule_skip 0.5": {"schedule_skip": 0.5},
    "fitted 8, whole schedule": {"n_fitted_starts": 8, "schedule_skip": 0.0},
    "cube 4 + fitted 4, whole schedule": {"n_rotations": 4, "n_fitted_starts": 4,
                                           "schedule_skip": 0.0},
    "cube 8, whole schedule": {"n_rotations": 8, "n_fitted_starts": 0, "schedule_skip": 0.0},
    "z-bar: foreground": {"depth_target": "foreground"},
    "no tets": {"geom_tets": False},
    "Eq. 14: dense points": {"match_points": "dense"},
    "Eq. 14: no partner landing": {"partner_swap": False},
}


#: settings of other Config sections a variant may change besides ``align``: only test-time
#: ones, since every variant shares the first run's prior and descriptors
SECTIONS: dict[str, tuple[str, ...]] = {"masks": ("test_source",)}


def matching_only(changes: dict) -> bool:
    """The variant changes only the matching (:data:`semalign3d.config.MATCHING_ONLY`)."""
    return bool(changes) and set(changes) <= set(MATCHING_ONLY)


def variant_config(base: Config, changes: dict) -> Config:
    """``base`` with a variant's changes: top-level keys are ``AlignConfig`` fields, except the
    :data:`SECTIONS`, whose dicts change that section (test-time keys only)."""
    align = {k: v for k, v in changes.items() if k not in SECTIONS}
    # on the CPU and one image per batch wherever it runs: the committed figures were made so
    cfg = replace(base, align=replace(AlignConfig(), **{"device": "cpu", **align}))
    for k, allowed in SECTIONS.items():
        if k in changes:
            bad = sorted(set(changes[k]) - set(allowed))
            if bad:
                raise ConfigError(f"variant changes {k}.{', '.join(bad)}: variants share one prior "
                                  f"and descriptors, so only {k}.{'/'.join(allowed)} may change")
            cfg = replace(cfg, **{k: replace(getattr(base, k), **changes[k])})
    return cfg


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.symlink(src.resolve(), dst)


#: the two tables: title -> (what each cell holds, per-run value pair)
TABLES = {
    "pairs": "SemAlign3D per-image PCK@0.1 of the pairs, overall / viewpoint variation 2",
    "alignment": "PCK@0.1 of the aligned model keypoints / % of images whose fit is a mirror "
                 "twin (swapped labels score better)",
}


def table_rows(results: dict[str, dict[str, dict]]) -> dict[str, list[list[str]]]:
    """Both tables as rows of strings: ``[variant, <one cell per category>, mean]`` (the first
    row of ``pairs`` is the NN baseline, from each category's first variant); missing runs are
    "-" and left out of the mean."""
    cats = list(results)
    names = list(dict.fromkeys(n for c in cats for n in results[c]))

    def row(label: str, get) -> list[str]:
        vals = [get(c) for c in cats]
        got = [v[0] for v in vals if v]
        mean = f"{sum(got) / len(got):.1f}" if got else "-"
        return [label, *(f"{v[0]:.1f} / {v[1]:.1f}" if v else "-" for v in vals), mean]

    def pick(c: str, name: str, key: str, second: str):
        r = results[c].get(name, {}).get(key)
        return (r["pck"], r[second] if r[second] is not None else float("nan")) if r else None

    # every variant of a category scores the same NN predictions: take the first one's
    pairs = [row("NN baseline", lambda c: pick(c, next(iter(results[c]), ""), "nn", "pck_vp2"))]
    pairs += [row(n, lambda c, n=n: pick(c, n, "semalign3d", "pck_vp2")) for n in names]
    align = [row(n, lambda c, n=n: pick(c, n, "alignment", "mirrored")) for n in names]
    return {"pairs": pairs, "alignment": align}


def header(results: dict[str, dict[str, dict]]) -> list[str]:
    return ["variant", *results, "mean"]


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    """Both tables of :func:`table_rows` as markdown, each under its title."""
    head = header(results)
    out = []
    for key, rows in table_rows(results).items():
        out += [TABLES[key], "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(out).rstrip()


def run_variant(root: Path, cat: str, cfg: Config, work: Path, slug: str, shared: RunDir,
                matching_only: bool, split: str, suffix: str = "") -> dict:
    """One evaluation in ``work/slug`` (prior and descriptors shared): the figures of a cell.
    A matching-only variant reuses the alignments of ``work/default<suffix>`` (same seed)."""
    run = RunDir(work / slug)
    if matching_only:
        default = RunDir(work / f"default{suffix}")
        _link(default.root / "alignments" / cat, run.root / "alignments" / cat)
        if default.alignment_settings(cat).exists():
            _link(default.alignment_settings(cat), run.alignment_settings(cat))
    if shared.prior(cat).exists():
        _link(shared.prior(cat), run.prior(cat))
    if shared.features.exists():
        _link(shared.features, run.features)
    t0 = time.perf_counter()
    r = evaluate_category(root, cat, cfg, run.root, profile="cpu", split=split, progress=False)
    # the first run's prior and descriptors serve every later variant
    if not shared.prior(cat).exists():
        _link(run.prior(cat), shared.prior(cat))
    if not shared.features.exists():
        _link(run.features, shared.features)
    out: dict = {
        m: {"pck": v["per_image"]["all"], "pck_vp2": v["by_viewpoint"].get("2"),
            "n_pairs": v["n_pairs"]} for m, v in summaries([r], cfg).items()
    }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    sc = alignment_scores(root, ClassRepresentation.load(run.prior(cat)), r.alignments)
    scored = [x for x in sc if x.n > 0]  # images with no annotated keypoint say nothing
    n = max(len(scored), 1)
    out["alignment"] = {
        "pck": 100 * sum(x.pck for x in scored) / n,
        "mirrored": 100 * sum(x.mirrored for x in scored) / n,
        "n_images": len(scored),
    }
    return out


def mean_over_seeds(runs: dict[int, dict]) -> dict:
    """One cell from runs with one or more alignment seeds: every figure averaged, the per-seed
    figures kept under ``"seeds"``."""
    first = next(iter(runs.values()))

    def mean(values: list) -> float | None:
        got = [v for v in values if v is not None]
        return sum(got) / len(got) if got else None

    out: dict = {}
    for key, val in first.items():
        if isinstance(val, dict):
            out[key] = {k: mean([r[key][k] for r in runs.values()]) for k in val}
        else:
            out[key] = mean([r[key] for r in runs.values()])
    out["seeds"] = {str(s): r for s, r in runs.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--categories", nargs="+", default=["chair", "bottle", "tvmonitor",
                                                        "aeroplane"])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS),
                   help="named variants to run (none: only the --extra ones)")
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=JSON",
                   help='more variants, e.g. \'vis 0.04={"visibility_radius": 0.04}\'; '
                        "those that change only the matching reuse the default's alignments")
    p.add_argument("--work", type=Path, default=Path("runs/ablation"), help="run directories")
    p.add_argument("--priors", type=Path, default=None,
                   help="folder with <category>.safetensors to reuse (default: build)")
    p.add_argument("--prior-config", type=Path, default=None, help="YAML of a PriorConfig")
    p.add_argument("--split", default="val")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="alignment seeds (align.seed) per variant; cells show their mean")
    p.add_argument("--out", type=Path, required=True, help="JSON output")
    p.add_argument("--summarize", action="store_true",
                   help="only print the table of an existing --out JSON")
    a = p.parse_args()
    if a.summarize:
        print(markdown_table(json.loads(a.out.read_text())))
        return
    variants = dict(VARIANTS)
    for item in a.extra:
        name, _, changes = item.partition("=")
        variants[name] = json.loads(changes)
        a.variants.append(name)
    for name in a.variants:
        if "seed" in variants[name]:
            p.error(f"variant '{name}' sets 'seed': alignment seeds are chosen with --seeds")
        if matching_only(variants[name]) and "default" not in a.variants[: a.variants.index(name)]:
            p.error(f"variant '{name}' changes only the matching and reuses the alignments of "
                    "'default': run 'default' before it (--variants default ...)")
    base = Config()
    if a.prior_config:
        from semalign3d.config import load_yaml

        base = replace(base, prior=load_yaml(PriorConfig, a.prior_config))
    # a rerun with other variants adds to the file instead of replacing it
    results: dict[str, dict[str, dict]] = (json.loads(a.out.read_text()) if a.out.is_file()
                                           else {})
    for cat in a.categories:
        shared = RunDir(a.work / "shared")
        if a.priors is not None:
            _link(a.priors / f"{cat}.safetensors", shared.prior(cat))
        for name in a.variants:
            changes = variants[name]
            runs = {}
            for seed in a.seeds:
                suffix = f"__seed{seed}" if seed != 0 else ""  # seed 0 keeps the older layout
                slug = "".join(ch if ch.isalnum() else "_" for ch in name) + suffix
                cfg = variant_config(base, {**changes, "seed": seed})
                runs[seed] = run_variant(a.root, cat, cfg, a.work, slug, shared,
                                         matching_only(changes),
                                         a.split, suffix)
                r = runs[seed]
                print(f"{cat:<10} {name:<22} seed {seed}  semalign3d "
                      f"{r['semalign3d']['pck']:5.1f}  nn {r['nn']['pck']:5.1f}  alignment PCK "
                      f"{r['alignment']['pck']:5.1f}  mirrored {r['alignment']['mirrored']:4.1f} %"
                      f"  ({r['seconds']} s)", flush=True)
            results.setdefault(cat, {})[name] = mean_over_seeds(runs)
            write_json(a.out, results)
    print()
    print(markdown_table(results))
    print(f"\nper-image PCK@0.1 on the synthetic '{a.split}' pairs, CPU profile; JSON: {a.out}")


if __name__ == "__main__":
    main()
