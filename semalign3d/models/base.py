"""Interfaces shared by all encoders, depth models and mask models.

Every encoder maps images to unit-norm descriptor maps ``[B x C x h x w]`` and tells exactly how a
grid cell maps to original pixels, so matchers and the alignment never guess it. The convention
(GeoAware-SC, method.md §2.2): the image is zero-padded to a centred square of side
``S = max(H, W)`` and resized to the network input; cell ``(i, j)`` of an ``h x w`` grid has centre
pixel ``((j + 0.5) / w * S - pad_x, (i + 0.5) / h * S - pad_y)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from semalign3d.data.records import AnnotatedImage


@dataclass(frozen=True)
class FeatureGrid:
    """Mapping between an ``h x w`` descriptor grid and an ``height x width`` image."""

    height: int
    width: int
    h: int
    w: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def pad(self) -> tuple[float, float]:
        """``(pad_x, pad_y)`` in pixels added on the left/top by centred square padding."""
        s = self.side
        return (s - self.width) / 2.0, (s - self.height) / 2.0

    def cell_centers(self) -> torch.Tensor:
        """``[h*w x 2]`` pixel ``(x, y)`` of every cell centre, row-major."""
        s, (px, py) = float(self.side), self.pad
        ii, jj = torch.meshgrid(torch.arange(self.h), torch.arange(self.w), indexing="ij")
        x = (jj.flatten() + 0.5) / self.w * s - px
        y = (ii.flatten() + 0.5) / self.h * s - py
        return torch.stack([x, y], -1)

    def pixels_to_grid(self, xy: torch.Tensor) -> torch.Tensor:
        """Pixels ``[... x 2]`` -> continuous grid coordinates ``(col, row)`` ``[... x 2]``
        where cell ``(i, j)``'s centre is ``(j, i)``."""
        s, (px, py) = float(self.side), self.pad
        col = (xy[..., 0] + px) / s * self.w - 0.5
        row = (xy[..., 1] + py) / s * self.h - 0.5
        return torch.stack([col, row], -1)

    def grid_to_pixels(self, cr: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`pixels_to_grid`."""
        s, (px, py) = float(self.side), self.pad
        x = (cr[..., 0] + 0.5) / self.w * s - px
        y = (cr[..., 1] + 0.5) / self.h * s - py
        return torch.stack([x, y], -1)

    def valid_cells(self) -> torch.Tensor:
        """``[h x w]`` bool: cells whose centre lies inside the image (not in the padding)."""
        c = self.cell_centers()
        ok = (c[:, 0] >= 0) & (c[:, 0] < self.width) & (c[:, 1] >= 0) & (c[:, 1] < self.height)
        return ok.reshape(self.h, self.w)

    def sample(self, features: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Bilinearly read descriptors at pixels.

        Args:
            features: ``[C x h x w]``.
            xy: ``[N x 2]`` pixel coordinates.
        Returns:
            ``[N x C]`` descriptors (re-normalised to unit length).
        """
        cr = self.pixels_to_grid(xy)
        gx = (cr[:, 0] + 0.5) / self.w * 2 - 1
        gy = (cr[:, 1] + 0.5) / self.h * 2 - 1
        grid = torch.stack([gx, gy], -1).to(features.dtype)[None, None]
        out = F.grid_sample(features[None], grid, align_corners=False, padding_mode="border")
        return F.normalize(out[0, :, 0].T, dim=-1)


def pad_to_square(image: torch.Tensor) -> torch.Tensor:
    """Centred zero-padding of ``[B x 3 x H x W]`` (or ``[3 x H x W]``) to a square."""
    h, w = image.shape[-2:]
    s = max(h, w)
    left, top = (s - w) // 2, (s - h) // 2
    return F.pad(image, (left, s - w - left, top, s - h - top))


@dataclass(frozen=True)
class DescriptorMap:
    """Unit-norm descriptors of one image. ``features: [C x h x w]``."""

    features: torch.Tensor
    grid: FeatureGrid


class Encoder(Protocol):
    """Images in, unit-norm descriptor maps out."""

    name: str

    def encode(self, images: Sequence[AnnotatedImage]) -> list[DescriptorMap]:
        """Descriptor maps ``[C x h x w]`` of ``images`` (mirrored records are encoded mirrored:
        encoding ``flip_image(x)`` equals encoding the flipped pixels)."""
        ...

    def cache_key(self) -> str:
        """A string that changes whenever the encoder's output could change."""
        ...


class DepthModel(Protocol):
    """Relative inverse depth (disparity), larger = nearer, at image resolution."""

    name: str

    def disparity(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        """``[H x W]`` float disparity per image."""
        ...


class MaskModel(Protocol):
    """Object masks at image resolution."""

    name: str

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        """``[H x W]`` bool per image."""
        ...
