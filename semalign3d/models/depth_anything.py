"""Depth Anything V2 relative disparity at image resolution (method.md §2.3).

The SemAlign3D code runs ``depth-anything/Depth-Anything-V2-Large-hf`` through transformers and
bicubically resizes the prediction to the original image size. We reproduce transformers'
``DPTImageProcessor`` for that checkpoint without depending on torchvision:

* resize with PIL bicubic so that the side whose scale is closest to 1 reaches
  ``DepthConfig.resolution`` (518) keeping the aspect ratio ("scale as little as possible"), each
  side rounded to a multiple of the patch size (14);
* rescale to [0, 1], ImageNet mean/std;
* ``predicted_depth`` (relative inverse depth: larger = nearer) -> bicubic, align_corners=False,
  to ``H x W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from semalign3d.config import DepthConfig
from semalign3d.data.records import AnnotatedImage
from semalign3d.data.spair import load_rgb
from semalign3d.models import runtime
from semalign3d.models.weights import fingerprint, load_pretrained


def default_conf() -> DepthConfig:
    """Depth-Anything-V2-Large (HF), 518 px, multiples of 14."""
    return DepthConfig(name="depth_anything")


def _multiple(value: float, multiple: int) -> int:
    # transformers' constrain_to_multiple_of without bounds; Python rounds halves to even like it
    return max(multiple, round(value / multiple) * multiple)


def input_size(height: int, width: int, resolution: int, multiple: int) -> tuple[int, int]:
    """DPT's keep-aspect-ratio size: the scale closest to 1 wins, sides snap to ``multiple``.

    ``input_size(375, 500, 518, 14) == (392, 518)``."""
    sh, sw = resolution / height, resolution / width
    scale = sw if abs(1 - sw) < abs(1 - sh) else sh
    return _multiple(scale * height, multiple), _multiple(scale * width, multiple)


class DepthAnythingV2:
    """Depth Anything V2 through transformers' ``DepthAnythingForDepthEstimation``. Loads once."""

    name = "depth_anything"

    def __init__(self, cfg: DepthConfig):
        from transformers import DepthAnythingForDepthEstimation

        self.cfg = cfg
        self.device = runtime.resolve_device(cfg.device)
        net = load_pretrained(
            DepthAnythingForDepthEstimation.from_pretrained,
            cfg.model,
            what="Depth Anything V2",
            option="depth.model",
        )
        self.net = net.eval().requires_grad_(False).to(self.device)
        self.multiple = int(net.config.patch_size)
        if cfg.resolution < self.multiple:
            raise ValueError(f"depth resolution {cfg.resolution} < patch size {self.multiple}")

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[3 x H x W]`` uint8 -> ``[1 x 3 x h x w]`` standardised network input."""
        h, w = rgb.shape[-2:]
        nh, nw = input_size(h, w, self.cfg.resolution, self.multiple)
        pil = Image.fromarray(rgb.permute(1, 2, 0).cpu().numpy())
        arr = np.asarray(pil.resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32)
        x = torch.from_numpy(arr / 255.0).permute(2, 0, 1)[None]
        return runtime.imagenet_normalize(x)

    @torch.no_grad()  # not inference_mode: callers may use the outputs under autograd
    def disparity(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        """``[H x W]`` float32 relative disparity per image (CPU; mirrored records mirrored)."""
        out = []
        bar = tqdm(images, desc="depth", unit="img", leave=False, disable=len(images) < 10)
        for image in bar:
            rgb = load_rgb(image)
            x = self.preprocess(rgb).to(self.device)
            pred = self.net(pixel_values=x).predicted_depth.float()  # [1 x h x w]
            full = F.interpolate(
                pred[:, None], size=tuple(rgb.shape[-2:]), mode="bicubic", align_corners=False
            )
            out.append(full[0, 0].cpu())
        return out

    def cache_key(self) -> str:
        return f"depth_anything-v1|{fingerprint(self.cfg.model)}|res{self.cfg.resolution}"
