"""Typed records exchanged between stages.

Keypoints are always indexed by the category's keypoint id (0 .. K-1, K from
``spair-keypoint-flips.json``), so ``keypoints[k]`` is keypoint id ``k`` in every image of a
category. Invisible keypoints are NaN and ``visible[k]`` is False.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


class DataError(ValueError):
    """A dataset file is missing, corrupt or inconsistent. The message names the file."""


@dataclass(frozen=True)
class AnnotatedImage:
    """One annotated image of a category.

    Attributes:
        name: image stem, e.g. ``"2007_005797"``.
        category: SPair-71k category name.
        path: the JPEG/PNG file.
        width, height: image size in pixels.
        bbox: object box ``(x0, y0, x1, y1)`` in pixels.
        keypoints: ``[K x 2]`` float pixel coordinates ``(x, y)``; NaN where invisible.
        visible: ``[K]`` bool.
        flipped: the record describes the horizontally mirrored image; loaders flip the pixels.
        mask_path: optional object mask (``Segmentation/<cat>/<name>.png``).
    """

    name: str
    category: str
    path: Path
    width: int
    height: int
    bbox: tuple[float, float, float, float]
    keypoints: torch.Tensor
    visible: torch.Tensor
    flipped: bool = False
    mask_path: Path | None = None

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def key(self) -> str:
        """Unique id of this view (``<cat>/<name>`` plus ``:flip`` for mirrored records)."""
        return f"{self.category}/{self.name}" + (":flip" if self.flipped else "")

    @property
    def bbox_size(self) -> float:
        """``max(w, h)`` of the box: the PCK threshold unit."""
        x0, y0, x1, y1 = self.bbox
        return float(max(x1 - x0, y1 - y0))


@dataclass(frozen=True)
class Pair:
    """A directed source -> target pair, as in ``PairAnnotation/<split>/*.json``.

    Attributes:
        name: file stem ``"<id>-<src>-<trg>:<cat>"``.
        kps_ids: keypoint ids visible in both images, in file order.
        src_kps, trg_kps: ``[N x 2]`` pixel coordinates in ``kps_ids`` order.
        src_bbox, trg_bbox: ``(x0, y0, x1, y1)``.
        viewpoint_variation: SPair's 0 (small) .. 2 (large) viewpoint-change bucket.
        mirror: SPair's flag for mirrored views.
    """

    name: str
    category: str
    split: str
    source: str
    target: str
    kps_ids: tuple[int, ...]
    src_kps: torch.Tensor
    trg_kps: torch.Tensor
    src_bbox: tuple[float, float, float, float]
    trg_bbox: tuple[float, float, float, float]
    viewpoint_variation: int = 0
    mirror: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def trg_bbox_size(self) -> float:
        x0, y0, x1, y1 = self.trg_bbox
        return float(max(x1 - x0, y1 - y0))
