"""``semalign3d match``: align a category's representation to two of your own images and
transfer keypoints from the first to the second (Eq. 14).

The object is located without annotations: from the descriptors themselves (cells that resemble
the representation) or from ``--box1/--box2`` when given. Writes ``matches.json``, a side-by-side
figure ``matches.png`` and one alignment overlay per image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError as e:
        raise ValueError(f"box must be 'x0,y0,x1,y1' in pixels, got {text!r}") from e
    return x0, y0, x1, y1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image1", type=Path, help="source image (keypoints are transferred from it)")
    p.add_argument("image2", type=Path, help="target image")
    p.add_argument("--category", required=True, help="category of the representation")
    p.add_argument("--prior", required=True, type=Path, help="representation .safetensors")
    p.add_argument("--keypoints", type=Path, default=None,
                   help="JSON list of [x, y] source pixels (default: every model keypoint as "
                   "aligned in image1)")
    p.add_argument("--box1", default=None, help="object box in image1: x0,y0,x1,y1 (pixels)")
    p.add_argument("--box2", default=None, help="object box in image2: x0,y0,x1,y1 (pixels)")
    p.add_argument("--encoder", default=None, help="override config.encoder.name")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset root (only the 'oracle' encoder needs it)")
    p.add_argument("--config", type=Path, default=None, help="YAML with a full Config")
    p.add_argument("--profile", choices=["cpu", "paper"], default="cpu", help="alignment size")
    p.add_argument("--steps", type=int, default=None,
                   help="override the profile's step count (schedules keep Table 5's shape)")
    p.add_argument("--out", required=True, type=Path, help="output folder")


def _record(path: Path, category: str, n_kps: int):
    import torch
    from PIL import Image, UnidentifiedImageError

    from semalign3d.data.records import AnnotatedImage, DataError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from e
    kps = torch.full((n_kps, 2), float("nan"))
    return AnnotatedImage(path.stem, category, path, w, h, (0.0, 0.0, float(w), float(h)), kps,
                          torch.zeros(n_kps, dtype=torch.bool))


def run(args: argparse.Namespace) -> int:
    import torch

    from semalign3d.align.model import prepare_model
    from semalign3d.align.optimize import align
    from semalign3d.align.profiles import category_config
    from semalign3d.align.target import make_target, stack_targets
    from semalign3d.config import Config, load_yaml, replace, scale_schedules
    from semalign3d.data.records import DataError
    from semalign3d.data.spair import load_rgb
    from semalign3d.experiment import transfer_pair
    from semalign3d.io import atomic_write, write_json
    from semalign3d.models import build_encoder
    from semalign3d.models.runtime import resolve_device
    from semalign3d.prior.representation import ClassRepresentation
    from semalign3d.viz import alignment_overlay, match_figure

    config = load_yaml(Config, args.config) if args.config else Config()
    if args.encoder:
        config = replace(config, encoder=replace(config.encoder, name=args.encoder))
    rep = ClassRepresentation.load(args.prior)
    if rep.category != args.category:
        raise ValueError(f"{args.prior}: representation of '{rep.category}', not "
                         f"'{args.category}'")
    cfg = category_config(args.category, config.align, args.profile)
    if args.steps:
        cfg = scale_schedules(cfg, args.steps)
    n_ids = int(rep.keypoint_ids.max()) + 1
    records = [_record(p, args.category, n_ids) for p in (args.image1, args.image2)]
    encoder = build_encoder(config.encoder, args.root)
    descs = list(encoder.encode(records))
    model = prepare_model(rep, cfg)
    alignments = []
    for rec, d, box in zip(records, descs, (_box(args.box1), _box(args.box2)), strict=True):
        torch.manual_seed(cfg.seed)
        target = make_target(str(rec.path), d, model, cfg, box=box)
        batch = stack_targets([target.to(resolve_device(cfg.device))], model, cfg)
        alignments.append(align(batch, model, cfg)[0])
    a1, a2 = alignments
    if args.keypoints is not None:
        try:
            q = torch.tensor(json.loads(args.keypoints.read_text()), dtype=torch.float64)
        except (OSError, json.JSONDecodeError, TypeError, ValueError) as e:
            raise DataError(f"{args.keypoints}: expected a JSON list of [x, y] ({e})") from e
        q = q.reshape(-1, 2)
    else:
        q = a1.keypoints_2d.clone()
    pred, used, landed = transfer_pair(rep, descs[0], descs[1], a1, a2, q, cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "matches.json", {
        "image1": str(args.image1), "image2": str(args.image2), "category": args.category,
        "queries": q.tolist(), "matches": pred.double().tolist(),
        "model_point": used.tolist(), "landed_on": landed.tolist(),
        "match_points": cfg.match_points, "partner_swap": cfg.partner_swap,
        "alignments": [a1.to_dict(), a2.to_dict()],
    })
    imgs = [load_rgb(r) for r in records]
    figs = {
        "matches.png": match_figure(imgs[0], imgs[1], q, pred, title=args.category),
        "alignment1.png": alignment_overlay(imgs[0], a1),
        "alignment2.png": alignment_overlay(imgs[1], a2),
    }
    for name, fig in figs.items():
        atomic_write(args.out / name, lambda p, f=fig: f.savefig(p, dpi=110, format="png"))
    print(f"{len(q)} keypoints transferred; wrote {args.out}/matches.json and figures")
    return 0
