"""``semalign3d features``: extract descriptor maps of a dataset into the feature cache.

Resumable: entries already in ``--out`` are skipped, each finished batch is written at once.
Later stages read the maps back with ``FeatureCache(out).encode(encoder, images)`` (all hits).
An ``index.json`` beside the entries maps every image key (``<cat>/<name>[:flip]``) to its file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ENCODERS = ("oracle", "dinov2", "sd", "dino_sd", "geoaware")
#: which config key ``--model-path`` sets for each encoder
MODEL_PATH_KEY = {
    "dinov2": "dinov2_model",
    "sd": "sd_model",
    "dino_sd": "sd_model",
    "geoaware": "geoaware_checkpoint",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, type=Path, help="SPair-71k layout root")
    p.add_argument("--encoder", required=True, choices=ENCODERS, help="descriptor model")
    p.add_argument("--out", required=True, type=Path, help="feature cache folder")
    p.add_argument("--categories", nargs="+", default=None, help="default: every category")
    p.add_argument(
        "--split",
        default="all",
        choices=["trn", "val", "test", "all"],
        help="images of this split's pairs (trn: the training images); all: every split present",
    )
    p.add_argument("--flip", action="store_true", help="also encode the mirrored images")
    p.add_argument("--config", type=Path, default=None, help="YAML run config (its 'encoder')")
    p.add_argument(
        "--model-path",
        default=None,
        help="hub id or local path of the encoder's main weights: the DINOv2 model (dinov2), the "
        "SD folder (sd, dino_sd) or GeoAware-SC's best_856.PTH (geoaware)",
    )
    p.add_argument("--dinov2-model", default=None, help="hub id or folder of DINOv2")
    p.add_argument("--dinov2-layer", type=int, default=None, help="0-based block (GeoAware: 11)")
    p.add_argument("--sd-model", default=None, help="hub id or folder of Stable Diffusion 1.5")
    p.add_argument("--geoaware-checkpoint", default=None, help="GeoAware-SC best_856.PTH")
    p.add_argument(
        "--captioner-checkpoint",
        default=None,
        help="ODISE odise_label_coco_50e-b67d2efc.pth (its implicit captioner conditions SD as "
        "GeoAware-SC's features were made; without it: empty prompt)",
    )
    p.add_argument("--clip-model", default=None, help="CLIP ViT-L/14-336 of the captioner")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    p.add_argument("--grid-size", type=int, default=None, help="descriptor grid side (60)")
    p.add_argument("--dinov2-resolution", type=int, default=None, help="DINOv2 input side (840)")
    p.add_argument("--sd-resolution", type=int, default=None, help="SD input side (960)")
    p.add_argument("--sd-window", type=int, default=None, help="SD slide window (512; 0: off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def encoder_config(args: argparse.Namespace):
    """The EncoderConfig from ``--config`` (or defaults) with the command-line overrides."""
    from semalign3d.config import Config, EncoderConfig, load_yaml, replace

    cfg = load_yaml(Config, args.config).encoder if args.config else EncoderConfig()
    changes = {"name": args.encoder}
    if args.model_path is not None:
        if args.encoder not in MODEL_PATH_KEY:
            raise ValueError(f"--model-path does not apply to the '{args.encoder}' encoder")
        changes[MODEL_PATH_KEY[args.encoder]] = args.model_path
    flags = {
        "dinov2_model": args.dinov2_model,
        "dinov2_layer": args.dinov2_layer,
        "sd_model": args.sd_model,
        "geoaware_checkpoint": args.geoaware_checkpoint,
        "sd_captioner_checkpoint": args.captioner_checkpoint,
        "sd_clip_model": args.clip_model,
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "grid_size": args.grid_size,
        "dinov2_resolution": args.dinov2_resolution,
        "sd_resolution": args.sd_resolution,
        "sd_window": args.sd_window,
    }
    changes.update({k: v for k, v in flags.items() if v is not None})
    return replace(cfg, **changes)


def select_images(root: Path, categories: list[str] | None, split: str, flip: bool) -> list:
    """Records of the unique images of ``split`` in ``categories`` (plus mirrored copies)."""
    from semalign3d.data.flips import flip_image
    from semalign3d.data.records import DataError
    from semalign3d.data.spair import SPLITS, SPairDataset

    ds = SPairDataset(root)
    cats = categories or ds.categories
    splits = (
        [s for s in SPLITS if (root / "PairAnnotation" / s).is_dir()] if split == "all" else [split]
    )
    if not splits:
        raise DataError(f"{root}: no PairAnnotation/<split> folder")
    images = []
    for cat in cats:
        names: dict[str, None] = {}
        for s in splits:
            found = ds.train_image_names(cat) if s == "trn" else ds.split_image_names(s, cat)
            names.update(dict.fromkeys(found))
        for name in names:
            rec = ds.image(cat, name)
            images += [rec, flip_image(rec)] if flip else [rec]
    if not images:
        raise DataError(f"{root}: no images in split '{split}' for categories {cats}")
    return images


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from semalign3d.io import write_json
    from semalign3d.models import build_encoder
    from semalign3d.models.cache import FeatureCache

    cfg = encoder_config(args)
    images = select_images(args.root, args.categories, args.split, args.flip)
    n_flip = sum(im.flipped for im in images)
    print(
        f"features: {len(images)} images ({len(images) - n_flip} + {n_flip} mirrored) from "
        f"{args.root} split={args.split}; encoder={cfg.name}"
    )
    t0 = time.perf_counter()
    encoder = build_encoder(cfg, root=args.root)
    t_load = time.perf_counter() - t0
    cache = FeatureCache(args.out)
    t1 = time.perf_counter()
    cache.precompute(encoder, images, progress=not args.no_progress)
    t_run = time.perf_counter() - t1
    s = dict(cache.stats)
    first = FeatureCache(args.out).encode(encoder, images[:1], progress=False)[0]
    edir = cache.encoder_dir(encoder)
    index_path = edir / "index.json"
    index = json.loads(index_path.read_text())["images"] if index_path.exists() else {}
    for im in images:
        index[im.key] = str(cache.entry_path(edir, im).relative_to(edir))
    write_json(index_path, {"encoder": encoder.cache_key(), "images": dict(sorted(index.items()))})
    rate = f"{s['misses'] / t_run:.2f} images/s computed" if s["misses"] else "all cached"
    c, h, w = first.features.shape
    print(
        f"descriptors [{c} x {h} x {w}]; cache hits={s['hits']} misses={s['misses']} "
        f"corrupt={s['corrupt']}; model load {t_load:.1f} s, encoding {t_run:.1f} s ({rate})"
    )
    print(f"wrote {edir} (index.json lists {len(index)} entries)")
    return 0
