"""Running models on a device: device/dtype choice, autocast, and the square network inputs.

Every real model shares these so that "auto" means the same everywhere (CUDA when present, bf16
autocast there, float32 on the CPU) and so that every encoder builds its input exactly as
:class:`semalign3d.models.base.FeatureGrid` describes it: centred zero padding to a square, then a
resize to the network side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from semalign3d.data.records import AnnotatedImage
from semalign3d.data.spair import load_rgb
from semalign3d.models.base import FeatureGrid, pad_to_square

#: ImageNet statistics used by DINOv2 and Depth Anything (pixels in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: ``"auto"`` is bfloat16 on CUDA and float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype '{name}'; expected auto or one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for reduced dtypes (weights stay float32, norms run in float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def square_resize(rgb: torch.Tensor, side: int) -> torch.Tensor:
    """Centred zero-padding to a square, then an antialiased bilinear resize.

    Args:
        rgb: ``[3 x H x W]`` uint8 (any device).
        side: output side in pixels.
    Returns:
        ``[3 x side x side]`` float32 in ``[0, 1]``.
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"expected a [3 x H x W] image, got shape {tuple(rgb.shape)}")
    x = pad_to_square(rgb.float() / 255.0)[None]
    if x.shape[-1] != side:
        x = F.interpolate(
            x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
    return x[0].clamp_(0.0, 1.0)


def load_square_batch(
    images: Sequence[AnnotatedImage], sides: Sequence[int], device: torch.device
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Pixels of ``images`` as square network inputs, one batch per requested side.

    Args:
        images: records; flipped ones are loaded mirrored (:func:`load_rgb`).
        sides: network input sides, e.g. ``(840, 960)`` for DINOv2 and SD.
        device: where the resize runs and the batches live.
    Returns:
        ``[B x 3 x side x side]`` float32 in ``[0, 1]`` per side, and ``(height, width)`` per image.
    """
    batches: list[list[torch.Tensor]] = [[] for _ in sides]
    sizes = []
    for image in images:
        rgb = load_rgb(image).to(device)
        sizes.append((int(rgb.shape[1]), int(rgb.shape[2])))
        for batch, side in zip(batches, sides, strict=True):
            batch.append(square_resize(rgb, side))
    return [torch.stack(b) for b in batches], sizes


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """``[B x 3 x H x W]`` in ``[0, 1]`` -> ImageNet-standardised pixels."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def to_grid(features: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[B x C x h x w]`` maps to ``[B x C x size x size]``.

    With ``align_corners=False`` cell centres keep the pad-to-square convention of FeatureGrid."""
    if features.shape[-2:] == (size, size):
        return features
    return F.interpolate(features, size=(size, size), mode="bilinear", align_corners=False)


def descriptor_grids(sizes: Sequence[tuple[int, int]], size: int) -> list[FeatureGrid]:
    """The FeatureGrid of a ``size x size`` map for every ``(height, width)``."""
    return [FeatureGrid(height=h, width=w, h=size, w=size) for h, w in sizes]


def check_finite(features: torch.Tensor, encoder: str, dtype: torch.dtype) -> torch.Tensor:
    """``features`` unchanged, or an error when it holds NaN/inf (e.g. float16 overflow)."""
    if not bool(torch.isfinite(features).all()):
        hint = (
            " (float16 overflows in SD's VAE: use bfloat16 or float32)"
            if dtype == torch.float16
            else ""
        )
        raise RuntimeError(f"encoder '{encoder}' produced non-finite descriptors in {dtype}{hint}")
    return features


def batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
