"""Reader for the official SPair-71k layout (also written by the synthetic generator).

::

    ROOT/JPEGImages/<cat>/<name>.jpg
    ROOT/ImageAnnotation/<cat>/<name>.json
    ROOT/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<cat>.json
    ROOT/Layout/{large,small}/{trn,val,test}.txt      (optional)
    ROOT/Segmentation/<cat>/<name>.png                 (optional)

Listing is lazy: pair names are parsed from file names (the full test split has 12,234 files),
and a JSON file is opened only when its record is asked for.
"""

from __future__ import annotations

import json
import os
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from semalign3d.data import flips
from semalign3d.data.records import AnnotatedImage, DataError, Pair

SPLITS = ("trn", "val", "test")


def _parse_pair_name(stem: str) -> tuple[str, str, str]:
    """``"000001-2011_001863-2010_002195:pottedplant"`` -> (src, trg, category)."""
    try:
        ids, category = stem.rsplit(":", 1)
        _, src, trg = ids.split("-", 2)
    except ValueError as e:
        raise DataError(f"pair file name '{stem}' is not '<id>-<src>-<trg>:<category>'") from e
    return src, trg, category


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def _field(data: dict, key: str, path: Path):
    if key not in data:
        raise DataError(f"{path}: missing field '{key}'")
    return data[key]


def _check_bbox(bbox, width: int, height: int, path: Path) -> tuple[float, float, float, float]:
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        raise DataError(f"{path}: bbox must be [x0, y0, x1, y1], got {bbox!r}")
    x0, y0, x1, y1 = (float(v) for v in bbox)
    tol = 2.0  # SPair boxes sometimes touch the border by a pixel
    if not (x1 > x0 and y1 > y0):
        raise DataError(f"{path}: empty bbox {bbox}")
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        raise DataError(f"{path}: bbox {bbox} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def _check_points(pts: torch.Tensor, width: int, height: int, path: Path, what: str) -> None:
    ok = torch.isnan(pts[:, 0]) | (
        (pts[:, 0] >= -1) & (pts[:, 0] <= width) & (pts[:, 1] >= -1) & (pts[:, 1] <= height)
    )
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten().tolist()
        raise DataError(
            f"{path}: {what} {bad} lie outside the {width}x{height} image: {pts[~ok].tolist()}"
        )


class SPairDataset:
    """Lazy reader of an SPair-71k-layout root.

    >>> ds = SPairDataset("../shared/data/spair-mini")
    >>> names = ds.pair_names("test", "cow")        # cheap: parses file names only
    >>> pair = ds.pair("test", names[0])            # opens one JSON
    >>> img = ds.image("cow", pair.source)          # AnnotatedImage, keypoints [K x 2]
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root does not exist")
        for sub in ("JPEGImages", "ImageAnnotation", "PairAnnotation"):
            if not (self.root / sub).is_dir():
                raise DataError(
                    f"{self.root}: not an SPair-71k layout root (missing '{sub}/'); "
                    "see data/README.md for how to obtain SPair-71k"
                )
        self._image = lru_cache(maxsize=4096)(self._load_image)

    # ----------------------------------------------------------------------------- listing
    @cached_property
    def categories(self) -> list[str]:
        return sorted(p.name for p in (self.root / "ImageAnnotation").iterdir() if p.is_dir())

    def _check_category(self, category: str) -> None:
        flips.num_keypoints(category)  # raises DataError for an unknown name

    @lru_cache(maxsize=8)  # noqa: B019 - the dataset object lives as long as its listing
    def _split_names(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}'; expected one of {SPLITS}")
        d = self.root / "PairAnnotation" / split
        if not d.is_dir():
            raise DataError(f"{d}: split directory not found")
        with os.scandir(d) as it:
            names = [e.name[:-5] for e in it if e.name.endswith(".json")]
        return tuple(sorted(names))

    def pair_names(self, split: str, category: str | None = None) -> list[str]:
        """Pair file stems of ``split`` (optionally of one category), sorted."""
        if category is not None:
            self._check_category(category)
        names = self._split_names(split)
        if category is None:
            return list(names)
        return [n for n in names if n.endswith(":" + category)]

    def train_image_names(self, category: str) -> list[str]:
        """Unique images of the category's ``trn`` pairs (the paper's training set)."""
        seen: dict[str, None] = {}
        for n in self.pair_names("trn", category):
            src, trg, _ = _parse_pair_name(n)
            seen.setdefault(src, None)
            seen.setdefault(trg, None)
        return list(seen)

    def split_image_names(self, split: str, category: str) -> list[str]:
        """Unique images appearing in ``split``'s pairs of ``category``."""
        seen: dict[str, None] = {}
        for n in self.pair_names(split, category):
            src, trg, _ = _parse_pair_name(n)
            seen.setdefault(src, None)
            seen.setdefault(trg, None)
        return list(seen)

    # ----------------------------------------------------------------------------- records
    def image(self, category: str, name: str) -> AnnotatedImage:
        """The annotated image ``name`` (stem, with or without extension) of ``category``."""
        return self._image(category, Path(name).stem)

    def _load_image(self, category: str, name: str) -> AnnotatedImage:
        self._check_category(category)
        path = self.root / "ImageAnnotation" / category / f"{name}.json"
        data = _read_json(path)
        width = int(_field(data, "image_width", path))
        height = int(_field(data, "image_height", path))
        if width <= 0 or height <= 0:
            raise DataError(f"{path}: image size {width}x{height} is not positive")
        fname = data.get("filename", f"{name}.jpg")
        bbox = _check_bbox(_field(data, "bndbox", path), width, height, path)
        kps_raw = _field(data, "kps", path)
        k = flips.num_keypoints(category)
        kps = torch.full((k, 2), float("nan"))
        for key, val in kps_raw.items():
            idx = int(key)
            if idx >= k:
                if val is None:
                    continue  # SPair pads every category to 30 ids
                raise DataError(f"{path}: keypoint id {idx} >= {k} ids of '{category}'")
            if val is not None:
                if len(val) != 2:
                    raise DataError(f"{path}: keypoint {key} must be [x, y], got {val!r}")
                kps[idx] = torch.tensor([float(val[0]), float(val[1])])
        _check_points(kps, width, height, path, "keypoints")
        mask = self.root / "Segmentation" / category / f"{name}.png"
        return AnnotatedImage(
            name=name,
            category=category,
            path=self.root / "JPEGImages" / category / fname,
            width=width,
            height=height,
            bbox=bbox,
            keypoints=kps,
            visible=~torch.isnan(kps[:, 0]),
            mask_path=mask if mask.exists() else None,
        )

    def pair(self, split: str, name: str) -> Pair:
        """The pair record of file ``PairAnnotation/<split>/<name>.json``."""
        path = self.root / "PairAnnotation" / split / f"{name}.json"
        data = _read_json(path)
        category = _field(data, "category", path)
        self._check_category(category)
        src = Path(_field(data, "src_imname", path)).stem
        trg = Path(_field(data, "trg_imname", path)).stem
        ids = tuple(int(i) for i in _field(data, "kps_ids", path))
        src_kps = torch.tensor(_field(data, "src_kps", path), dtype=torch.float32).reshape(-1, 2)
        trg_kps = torch.tensor(_field(data, "trg_kps", path), dtype=torch.float32).reshape(-1, 2)
        if not (len(ids) == src_kps.shape[0] == trg_kps.shape[0]):
            raise DataError(
                f"{path}: kps_ids ({len(ids)}), src_kps ({src_kps.shape[0]}) and trg_kps "
                f"({trg_kps.shape[0]}) differ in length"
            )
        sw, sh = (int(v) for v in _field(data, "src_imsize", path)[:2])
        tw, th = (int(v) for v in _field(data, "trg_imsize", path)[:2])
        _check_points(src_kps, sw, sh, path, "src_kps")
        _check_points(trg_kps, tw, th, path, "trg_kps")
        return Pair(
            name=name,
            category=category,
            split=split,
            source=src,
            target=trg,
            kps_ids=ids,
            src_kps=src_kps,
            trg_kps=trg_kps,
            src_bbox=_check_bbox(_field(data, "src_bndbox", path), sw, sh, path),
            trg_bbox=_check_bbox(_field(data, "trg_bndbox", path), tw, th, path),
            viewpoint_variation=int(data.get("viewpoint_variation", 0)),
            mirror=int(data.get("mirror", 0)),
        )

    def pairs(self, split: str, category: str | None = None) -> list[Pair]:
        return [self.pair(split, n) for n in self.pair_names(split, category)]


def load_rgb(image: AnnotatedImage) -> torch.Tensor:
    """``[3 x H x W]`` uint8 pixels of ``image`` (mirrored when ``image.flipped``)."""
    try:
        with Image.open(image.path) as im:
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise DataError(f"{image.path}: image file not found") from e
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{image.path}: cannot decode image ({e})") from e
    if arr.shape[0] != image.height or arr.shape[1] != image.width:
        raise DataError(
            f"{image.path}: image is {arr.shape[1]}x{arr.shape[0]} but its annotation says "
            f"{image.width}x{image.height}"
        )
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    return t.flip(-1) if image.flipped else t


def load_mask(image: AnnotatedImage) -> torch.Tensor | None:
    """``[H x W]`` bool object mask from ``Segmentation/`` (mirrored when flipped), or None."""
    if image.mask_path is None:
        return None
    try:
        with Image.open(image.mask_path) as im:
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{image.mask_path}: cannot decode mask ({e})") from e
    if arr.ndim == 3:
        arr = arr[..., 0]
    m = torch.from_numpy(arr > 0)
    if tuple(m.shape) != (image.height, image.width):
        raise DataError(
            f"{image.mask_path}: mask is {m.shape[1]}x{m.shape[0]}, image is "
            f"{image.width}x{image.height}"
        )
    return m.flip(-1) if image.flipped else m
