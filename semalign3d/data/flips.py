"""Horizontal flips with left/right keypoint partners (method.md §2.0)."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from importlib import resources

import torch

from semalign3d.data.records import AnnotatedImage, DataError


@cache
def _table() -> dict:
    text = resources.files("semalign3d.resources").joinpath("spair-keypoint-flips.json").read_text()
    return json.loads(text)


def categories() -> list[str]:
    """The 18 SPair-71k category names."""
    return list(_table()["categories"])


def num_keypoints(category: str) -> int:
    return int(_category(category)["num_keypoints"])


def _category(category: str) -> dict:
    per = _table()["per_category"]
    if category not in per:
        raise DataError(f"unknown category '{category}'; known categories: {sorted(per)}")
    return per[category]


def flip_permutation(category: str) -> torch.Tensor:
    """``[K]`` long tensor ``perm`` with ``flipped_kps[perm[k]] = kps[k]`` (an involution)."""
    entry = _category(category)
    perm = torch.arange(int(entry["num_keypoints"]))
    for a, b in entry["swap"]:
        perm[a], perm[b] = b, a
    return perm


def flip_keypoints(kps: torch.Tensor, width: int, perm: torch.Tensor) -> torch.Tensor:
    """Mirror pixel keypoints ``[... x K x 2]`` (x -> W - x) and permute ids by ``perm``.

    Pixel coordinates are continuous with pixel ``i`` covering ``[i, i + 1)`` (the convention of
    :mod:`semalign3d.geometry` and ``FeatureGrid``), so ``W - x`` is the exact mirror image.
    """
    out = kps.clone()
    out[..., 0] = width - kps[..., 0]
    return out[..., perm, :]


def flip_image(image: AnnotatedImage) -> AnnotatedImage:
    """The record of the horizontally mirrored image. ``flip_image(flip_image(x)) == x``."""
    perm = flip_permutation(image.category)
    if perm.numel() != image.num_keypoints:
        raise DataError(
            f"{image.path}: {image.num_keypoints} keypoints but category '{image.category}' "
            f"has {perm.numel()}"
        )
    w = image.width
    x0, y0, x1, y1 = image.bbox
    return dataclasses.replace(
        image,
        keypoints=flip_keypoints(image.keypoints, w, perm),
        visible=image.visible[perm],
        bbox=(w - x1, y0, w - x0, y1),
        flipped=not image.flipped,
    )


def partner_positions(category: str, keypoint_ids: torch.Tensor) -> torch.Tensor:
    """``[K]`` long: for a keypoint tensor ordered by ``keypoint_ids``, the position of each
    keypoint's left/right partner (itself when it has none or the partner is not in the list).
    ``points[partner_positions(...)]`` is the mirror-twin labelling of ``points``."""
    perm = flip_permutation(category)
    ids = [int(k) for k in keypoint_ids]
    pos = {k: i for i, k in enumerate(ids)}
    return torch.tensor([pos.get(int(perm[k]), i) for i, k in enumerate(ids)], dtype=torch.long)
