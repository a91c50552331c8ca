"""Simulated monocular depth for the synthetic dataset.

It returns what an estimator like Depth-Anything-V2 returns: relative inverse depth (disparity),
larger = nearer, at image resolution, with an unknown per-image scale and offset, a smooth
low-frequency multiplicative and additive error, soft object outlines (it is upsampled from the
``Oracle/`` maps, a quarter of the 60 x 60 patch size per sample) and plausible far values on the
background (a receding ground: farther at the top of the image).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.data.synthetic.generate import DepthKnobs, read_metadata


def _smooth(rng: np.random.Generator, height: int, width: int, cells: int = 4) -> torch.Tensor:
    """``[H x W]`` smooth random field with values in about [-1, 1]."""
    g = torch.tensor(rng.uniform(-1, 1, size=(1, 1, cells, cells)), dtype=torch.float32)
    return F.interpolate(g, size=(height, width), mode="bicubic", align_corners=False)[0, 0]


def simulate_disparity(
    depth: torch.Tensor, height: int, width: int, error: float, rng: np.random.Generator
) -> torch.Tensor:
    """Disparity map of one image.

    Args:
        depth: ``[R x R]`` metric camera depth over the centred padded square (0 = no object).
        height, width: image size.
        error: amplitude of the smooth multiplicative / additive errors.
        rng: per-image generator (drawn in a fixed order).
    Returns:
        ``[H x W]`` positive float32 disparity.
    """
    r_h, r_w = depth.shape
    fg = depth > 0
    disp = torch.zeros_like(depth, dtype=torch.float32)
    disp[fg] = 1.0 / depth[fg].float()
    near = float(disp[fg].min()) if bool(fg.any()) else 1.0
    far_level = near * float(rng.uniform(0.3, 0.55))
    rows = (torch.arange(r_h, dtype=torch.float32) + 0.5) / r_h
    ground = far_level * (0.6 + 0.6 * rows)[:, None].expand(r_h, r_w)
    ground = ground * (1 + 0.1 * _smooth(rng, r_h, r_w))
    # resample the padded square at the image's pixel centres; object and background are
    # interpolated separately and blended over a narrow band (slightly soft outlines)
    s = float(max(height, width))
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 + (s - width) / 2) / s * 2 - 1
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 + (s - height) / 2) / s * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1)[None]
    w = fg.float()
    maps = torch.stack([disp * w, w, ground * (1 - w), 1 - w])[None]
    up = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    obj = up[0] / up[1].clamp_min(1e-6)
    far = up[2] / up[3].clamp_min(1e-6)
    alpha = (2 * up[1] - 0.5).clamp(0, 1)
    img = alpha * obj + (1 - alpha) * far
    mult, add = _smooth(rng, height, width, 3), _smooth(rng, height, width, 3)
    img = img * (1 + error * mult) + error * float(img.mean()) * add
    scale = float(np.exp(rng.uniform(np.log(0.5), np.log(50.0))))
    offset = float(rng.uniform(0.0, 0.3)) * float(img.mean())
    return (scale * (img + offset)).clamp_min(1e-6)


class SyntheticDepth:
    """``DepthModel`` over a synthetic dataset root; the error amplitude comes from
    ``ROOT/synthetic.json`` ("depth" section)."""

    name = "synthetic"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = read_metadata(self.root)
        self.error = float(meta.get("depth", {}).get("error", DepthKnobs().error))
        self.seed = int(meta["seed"])
        if self.error < 0:
            raise ValueError(f"{self.root / 'synthetic.json'}: depth error must be >= 0")

    def disparity(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        """``[H x W]`` disparity per image (mirrored records mirrored)."""
        out = []
        for img in images:
            path = self.root / "Oracle" / img.category / f"{img.name}.npz"
            try:
                with np.load(path) as z:
                    depth, h, w = z["depth"], int(z["height"]), int(z["width"])
            except FileNotFoundError as e:
                raise DataError(f"{path}: oracle maps not found (is {img.key} synthetic?)") from e
            except (KeyError, ValueError, OSError) as e:
                raise DataError(f"{path}: not a valid oracle file ({e})") from e
            if (h, w) != (img.height, img.width):
                raise DataError(
                    f"{path}: maps are for a {w}x{h} image, the record says "
                    f"{img.width}x{img.height}"
                )
            key = zlib.crc32(f"depth/{img.category}/{img.name}".encode())
            rng = np.random.default_rng([self.seed, key])
            d = simulate_disparity(
                torch.from_numpy(depth.astype(np.float32)), h, w, self.error, rng
            )
            out.append(d.flip(-1) if img.flipped else d)
        return out
