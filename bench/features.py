"""Throughput of the descriptor encoders with random-init models of the REAL sizes.

DINOv2-B/14, the SD-1.5 UNet + VAE, ODISE's implicit captioner with a CLIP ViT-L/14-336 image
tower, and GeoAware's aggregation network are built from their published configurations (no
weights needed) and run through the production encoders on synthetic 500 x 375 JPEGs, so the
figures include image decoding and resizing. Target: >= 30 images/s for ``geoaware`` on one H100
(bf16, batch >= 4) at GeoAware's resolutions (the defaults).

    python bench/features.py --device cuda --dtype bfloat16 --batch 4 --n 64
    python bench/features.py --device cpu --dinov2-resolution 224 --sd-resolution 256 --n 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semalign3d.config import EncoderConfig
from semalign3d.data.records import AnnotatedImage
from semalign3d.models import runtime


def real_size_parts(cfg: EncoderConfig, device: torch.device, dtype: torch.dtype, captioner: bool):
    """DINOv2 backbone, SD features and aggregation net of the real sizes, random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Dinov2Config,
        Dinov2Model,
    )

    from semalign3d.models.dinov2 import DinoV2Backbone
    from semalign3d.models.geoaware import AggregationNetwork
    from semalign3d.models.sd import ImplicitCaptioner, StableDiffusionFeatures

    torch.manual_seed(0)
    with torch.device(device):  # initialise in place: fast on a GPU
        dino = Dinov2Model(Dinov2Config(image_size=518))  # ViT-B/14: 768 x 12 blocks
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        cap = clip = None
        if captioner:
            clip = CLIPVisionModelWithProjection(
                CLIPVisionConfig(
                    hidden_size=1024,
                    intermediate_size=4096,
                    num_hidden_layers=24,
                    num_attention_heads=16,
                    image_size=336,
                    patch_size=14,
                    projection_dim=768,
                )
            )
            cap = ImplicitCaptioner(768, 77, 768, 1280)
        agg = AggregationNetwork()
    prompt = torch.randn(1, 77, 768)
    backbone = DinoV2Backbone(dino, cfg.dinov2_layer, device, dtype, spec="random-init")
    sd = StableDiffusionFeatures(cfg, unet, vae, prompt, device, dtype, cap, clip)
    return backbone, sd, agg


def synthetic_images(folder: Path, n: int) -> list[AnnotatedImage]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        h, w = (375, 500) if i % 2 == 0 else (500, 375)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        out.append(
            AnnotatedImage(
                name=path.stem,
                category="cow",
                path=path,
                width=w,
                height=h,
                bbox=(0.0, 0.0, w - 1.0, h - 1.0),
                keypoints=torch.zeros(0, 2),
                visible=torch.zeros(0, dtype=torch.bool),
            )
        )
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=4, help="images per forward pass")
    p.add_argument("--n", type=int, default=32, help="timed images per encoder (after warm-up)")
    p.add_argument("--dinov2-resolution", type=int, default=840)
    p.add_argument("--sd-resolution", type=int, default=960)
    p.add_argument("--sd-window", type=int, default=512)
    p.add_argument("--no-captioner", action="store_true", help="plain empty-prompt SD")
    p.add_argument("--encoders", nargs="+", default=["dinov2", "sd", "geoaware"])
    args = p.parse_args()

    from semalign3d.models.dino_sd import DinoSDFeatures
    from semalign3d.models.dinov2 import DinoV2Encoder
    from semalign3d.models.geoaware import GeoAwareEncoder
    from semalign3d.models.sd import SDEncoder

    device = runtime.resolve_device(args.device)
    dtype = runtime.resolve_dtype(args.dtype, device)
    grid = args.dinov2_resolution // 14
    if args.sd_resolution // 16 != grid:
        print(f"note: SD grid {args.sd_resolution // 16} resized to the DINOv2 grid {grid}")
    cfg = EncoderConfig(
        dinov2_resolution=args.dinov2_resolution,
        sd_resolution=args.sd_resolution,
        sd_window=args.sd_window,
        grid_size=grid,
        batch_size=args.batch,
        device=str(device),
        dtype=args.dtype,
    )
    t0 = time.perf_counter()
    backbone, sd, agg = real_size_parts(cfg, device, dtype, captioner=not args.no_captioner)
    print(f"built real-size random-init models in {time.perf_counter() - t0:.1f} s")
    n_params = {
        "dinov2": sum(q.numel() for q in backbone.net.parameters()),
        "unet": sum(q.numel() for q in sd.unet.parameters()),
        "vae": sum(q.numel() for q in sd.vae.parameters()),
        "clip": sum(q.numel() for q in sd.clip.parameters()) if sd.clip is not None else 0,
        "aggregation": sum(q.numel() for q in agg.parameters()),
    }
    print("parameters (M): " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in n_params.items()))
    encoders = {
        "dinov2": lambda: DinoV2Encoder(cfg, backbone=backbone),
        "sd": lambda: SDEncoder(cfg, sd=sd),
        "geoaware": lambda: GeoAwareEncoder(
            cfg, net=agg, features=DinoSDFeatures(cfg, device, dtype, dino=backbone, sd=sd)
        ),
    }
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(
        f"device={device} ({gpu}) dtype={dtype} batch={args.batch} n={args.n} "
        f"dinov2={args.dinov2_resolution}px sd={args.sd_resolution}px window={args.sd_window} "
        f"grid={grid} captioner={'off' if args.no_captioner else 'on'} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"{'encoder':10s} {'images':>6s} {'seconds':>8s} {'images/s':>9s}  output")
    with tempfile.TemporaryDirectory() as tmp:
        images = synthetic_images(Path(tmp), args.n + args.batch)
        for name in args.encoders:
            enc = encoders[name]()
            enc.encode(images[: args.batch])  # warm-up: kernels, allocator, cudnn autotune
            sync(device)
            t = time.perf_counter()
            maps = enc.encode(images[args.batch :])
            sync(device)
            dt = time.perf_counter() - t
            shape = "x".join(str(s) for s in maps[0].features.shape)
            print(f"{name:10s} {args.n:6d} {dt:8.2f} {args.n / dt:9.2f}  [{shape}]")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
