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

from semalign3d.config import AlignConfig, Config, PriorConfig, replace
from semalign3d.experiment import RunDir, alignment_scores, evaluate_category, summaries
from semalign3d.io import write_json
from semalign3d.prior.representation import ClassRepresentation

#: name -> (AlignConfig changes, matching-only?)
VARIANTS: dict[str, tuple[dict, bool]] = {
    "default": ({}, False),  # must come first: matching-only variants reuse its alignments
    "no visibility": ({"visibility_radius": 0.0}, False),
    "no depth order": ({"w_depth_order": 0.0}, False),
    "neither tie-breaker": ({"visibility_radius": 0.0, "w_depth_order": 0.0}, False),
    "p_sem gaussian": ({"p_sem": "gaussian"}, False),
    "dense: points": ({"dense_likelihood": "points"}, False),
    "sparse: pixels": ({"sparse_likelihood": "pixels"}, False),
    "+ mirrored hyps": ({"mirror_hypotheses": True}, False),
    "no chirality": ({"w_chirality": 0.0}, False),
    "no facing": ({"facing_tau": 0.0}, False),
    # starting poses: the default is one fitted start entering the schedules at 0.75
    "fitted 2": ({"n_fitted_starts": 2}, False),
    "fitted 4": ({"n_fitted_starts": 4}, False),
    "fitted: 480 candidates": ({"fit_candidates": 480}, False),
    "fitted: schedule_skip 0.5": ({"schedule_skip": 0.5}, False),
    "fitted 8, whole schedule": ({"n_fitted_starts": 8, "schedule_skip": 0.0}, False),
    "cube 4 + fitted 4, whole schedule": ({"n_rotations": 4, "n_fitted_starts": 4,
                                           "schedule_skip": 0.0}, False),
    "cube 8, whole schedule": ({"n_rotations": 8, "n_fitted_starts": 0, "schedule_skip": 0.0},
                               False),
    "z-bar: foreground": ({"depth_target": "foreground"}, False),
    "no tets": ({"geom_tets": False}, False),
    "Eq. 14: dense points": ({"match_points": "dense"}, True),
}


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
    row of ``pairs`` is the NN baseline); missing runs are "-" and left out of the mean."""
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

    pairs = [row("NN baseline", lambda c: pick(c, "default", "nn", "pck_vp2"))]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--categories", nargs="+", default=["chair", "bottle", "tvmonitor",
                                                        "aeroplane"])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS),
                   help="named variants to run (none: only the --extra ones)")
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=JSON",
                   help='more variants, e.g. \'vis 0.04={"visibility_radius": 0.04}\'')
    p.add_argument("--work", type=Path, default=Path("runs/ablation"), help="run directories")
    p.add_argument("--priors", type=Path, default=None,
                   help="folder with <category>.safetensors to reuse (default: build)")
    p.add_argument("--prior-config", type=Path, default=None, help="YAML of a PriorConfig")
    p.add_argument("--split", default="val")
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
        variants[name] = (json.loads(changes), False)
        a.variants.append(name)
    base = Config()
    if a.prior_config:
        from semalign3d.config import load_yaml

        base = replace(base, prior=load_yaml(PriorConfig, a.prior_config))
    results: dict[str, dict[str, dict]] = {}
    for cat in a.categories:
        shared = RunDir(a.work / "shared")
        if a.priors is not None:
            _link(a.priors / f"{cat}.safetensors", shared.prior(cat))
        for name in a.variants:
            changes, matching_only = variants[name]
            cfg = replace(base, align=replace(AlignConfig(), **changes))
            slug = "".join(ch if ch.isalnum() else "_" for ch in name)
            run = RunDir(a.work / slug)
            if matching_only:  # reuse the default's alignments, only matching changes
                _link(a.work / "default" / "alignments" / cat, run.root / "alignments" / cat)
            if shared.prior(cat).exists():
                _link(shared.prior(cat), run.prior(cat))
            if shared.features.exists():
                _link(shared.features, run.features)
            t0 = time.perf_counter()
            r = evaluate_category(a.root, cat, cfg, run.root, profile="cpu", split=a.split,
                                  progress=False)
            # the first run's prior and descriptors serve every later variant
            if not shared.prior(cat).exists():
                _link(run.prior(cat), shared.prior(cat))
            if not shared.features.exists():
                _link(run.features, shared.features)
            s = summaries([r], cfg)
            results.setdefault(cat, {})[name] = {
                m: {"pck": v["per_image"]["all"], "pck_vp2": v["by_viewpoint"].get("2"),
                    "n_pairs": v["n_pairs"]} for m, v in s.items()
            }
            results[cat][name]["seconds"] = round(time.perf_counter() - t0, 1)
            sc = alignment_scores(a.root, ClassRepresentation.load(run.prior(cat)), r.alignments)
            scored = [x for x in sc if x.n > 0]  # images with no annotated keypoint say nothing
            n = max(len(scored), 1)
            results[cat][name]["alignment"] = {
                "pck": 100 * sum(x.pck for x in scored) / n,
                "mirrored": 100 * sum(x.mirrored for x in scored) / n,
                "n_images": len(scored),
            }
            al = results[cat][name]["alignment"]
            print(f"{cat:<10} {name:<22} semalign3d {s['semalign3d']['per_image']['all']:5.1f}"
                  f"  nn {s['nn']['per_image']['all']:5.1f}  alignment PCK {al['pck']:5.1f}"
                  f"  mirrored {al['mirrored']:4.1f} %  ({results[cat][name]['seconds']} s)",
                  flush=True)
            write_json(a.out, results)
    print()
    print(markdown_table(results))
    print(f"\nper-image PCK@0.1 on the synthetic '{a.split}' pairs, CPU profile; JSON: {a.out}")


if __name__ == "__main__":
    main()
