"""Object-mask sources (method.md §2.4): ground truth, ODISE, bounding box, SAM, or none.

Every source implements :class:`semalign3d.models.base.MaskModel`: ``masks(images)`` returns one
``[H x W]`` bool tensor per record, mirrored for flipped records, in the record's pixel frame.

* ``ground_truth``: SPair's ``Segmentation/<cat>/<name>.png``.
* ``odise``: GeoAware-SC's pre-extracted ODISE masks ``Masks-ODISE/<cat>/<name>.jpg``, binarised
  like GeoAware's ``convert_to_binary_mask`` (grey value > 127).
* ``bbox``: the annotated box (pixel indices ``ceil(x0)..floor(x1)``, inclusive).
* ``sam_keypoints``: SAM prompted with all visible keypoints, multimask output
  ``MaskConfig.sam_multimask_index`` (uses ground truth: train images only).
* ``sam_box``: SAM prompted with the annotated box, single-mask output.
* ``none``: every pixel is foreground (no background constraint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from semalign3d.config import MaskConfig
from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.data.spair import load_mask, load_rgb

SOURCES = ("ground_truth", "odise", "bbox", "sam_keypoints", "sam_box", "none")


def _bar(images: Sequence[AnnotatedImage], what: str):
    return tqdm(images, desc=what, unit="img", leave=False, disable=len(images) < 10)


def default_conf() -> MaskConfig:
    """Ground-truth train masks, box test masks ([R])."""
    return MaskConfig()


class GroundTruthMasks:
    """SPair's segmentation masks; a missing file is an error naming it."""

    name = "ground_truth"

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        out = []
        for image in images:
            m = load_mask(image)
            if m is None:
                expected = image.path.parents[2] / "Segmentation" / image.category
                raise DataError(
                    f"{expected / (image.name + '.png')}: no ground-truth mask for "
                    f"{image.key}; use another mask source (odise, bbox, sam_*)"
                )
            out.append(m)
        return out


class OdiseMasks:
    """GeoAware-SC's ODISE masks under ``root/<subdir>/<cat>/<name>.jpg``."""

    name = "odise"

    def __init__(self, root: str | Path, subdir: str = "Masks-ODISE", threshold: int = 127):
        self.dir = Path(root) / subdir
        self.threshold = threshold
        if not self.dir.is_dir():
            raise DataError(f"{self.dir}: ODISE mask folder not found")

    def path(self, image: AnnotatedImage) -> Path:
        return self.dir / image.category / f"{image.name}.jpg"

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        out = []
        for image in images:
            path = self.path(image)
            try:
                with Image.open(path) as im:
                    grey = np.asarray(im.convert("L"))
            except FileNotFoundError as e:
                raise DataError(f"{path}: ODISE mask not found for {image.key}") from e
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{path}: cannot decode ODISE mask ({e})") from e
            if grey.shape != (image.height, image.width):
                raise DataError(
                    f"{path}: mask is {grey.shape[1]}x{grey.shape[0]}, image is "
                    f"{image.width}x{image.height}"
                )
            m = torch.from_numpy(grey > self.threshold)
            out.append(m.flip(-1) if image.flipped else m)
        return out


def box_mask(bbox: tuple[float, float, float, float], height: int, width: int) -> torch.Tensor:
    """``[height x width]`` bool: pixels whose centre ``(i + 0.5, j + 0.5)`` lies in the box.

    Pixel ``i`` covers ``[i, i + 1)`` (the convention of ``geometry`` and ``flips``), so the mask
    of a mirrored box is exactly the mirrored mask.
    """
    x0, y0, x1, y1 = bbox
    xs = torch.arange(width) + 0.5
    ys = torch.arange(height) + 0.5
    inside_x = (xs >= x0) & (xs <= x1)
    inside_y = (ys >= y0) & (ys <= y1)
    return inside_y[:, None] & inside_x[None, :]


class BoxMasks:
    """The annotated bounding box as a mask (records of flipped images carry flipped boxes)."""

    name = "bbox"

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        return [box_mask(im.bbox, im.height, im.width) for im in images]


class FullMasks:
    """No mask: every pixel counts as object."""

    name = "none"

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        return [torch.ones(im.height, im.width, dtype=torch.bool) for im in images]


class SamKeypointMasks:
    """SAM prompted with every visible keypoint as a positive point (train images only)."""

    name = "sam_keypoints"

    def __init__(self, cfg: MaskConfig):
        from semalign3d.models.sam import SamPredictor

        if not 0 <= cfg.sam_multimask_index <= 2:
            raise ValueError(
                f"sam_multimask_index must be 0, 1 or 2, got {cfg.sam_multimask_index}"
            )
        self.index = cfg.sam_multimask_index
        self.sam = SamPredictor(cfg.sam_model, cfg.device)

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        out = []
        for image in _bar(images, self.name):
            pts = image.keypoints[image.visible]
            if len(pts) == 0:
                raise DataError(f"{image.path}: no visible keypoints to prompt SAM with")
            masks, _ = self.sam.predict(load_rgb(image), points=pts, multimask=True)
            out.append(masks[self.index])
        return out


class SamBoxMasks:
    """SAM prompted with the annotated box (single best mask)."""

    name = "sam_box"

    def __init__(self, cfg: MaskConfig):
        from semalign3d.models.sam import SamPredictor

        self.sam = SamPredictor(cfg.sam_model, cfg.device)

    def masks(self, images: Sequence[AnnotatedImage]) -> list[torch.Tensor]:
        out = []
        for image in _bar(images, self.name):
            masks, _ = self.sam.predict(load_rgb(image), box=image.bbox, multimask=False)
            out.append(masks[0])
        return out
