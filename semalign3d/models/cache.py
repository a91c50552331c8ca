"""Disk cache of descriptor maps, keyed by image content and encoder.

Layout::

    DIR/<sha256(encoder.cache_key())[:16]>/encoder.txt          the full encoder key
    DIR/<sha256(encoder.cache_key())[:16]>/<hh>/<hash>.safetensors

``<hash>`` is the SHA-256 of the image FILE bytes plus the flipped flag, so renamed or copied
images hit, and an edited image misses. Each entry holds ``features [C x h x w]`` (float16 when
``C >= half_min_channels``, else float32) and, as metadata, the grid, the image size and the
encoder key. Writes are atomic; an entry that fails to load or disagrees with its metadata or the
record is recomputed and overwritten. A dataset-wide run (:meth:`FeatureCache.precompute`, which
keeps nothing in memory) resumes where it was killed because each batch is written as soon as it
is computed.

Whatever is returned equals what a later hit loads: float16 entries are re-normalised after the
round trip on both paths, so results never depend on the cache state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.io import atomic_write, write_text
from semalign3d.models.base import DescriptorMap, Encoder, FeatureGrid


class FeatureCache:
    """Descriptor-map cache in ``directory``.

    Args:
        directory: cache root (created on first write).
        half_min_channels: maps with at least this many channels are stored as float16.
    Attributes:
        stats: counts of ``hits``, ``misses`` and ``corrupt`` entries since construction.
    """

    def __init__(self, directory: str | Path, half_min_channels: int = 64):
        self.dir = Path(directory)
        self.half_min_channels = half_min_channels
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0}
        self._hashes: dict[tuple[str, int, int, bool], str] = {}

    # ----------------------------------------------------------------------------- keys
    def encoder_dir(self, encoder: Encoder) -> Path:
        """The folder of ``encoder``'s entries."""
        return self._key_dir(encoder.cache_key())

    def _key_dir(self, key: str) -> Path:
        return self.dir / hashlib.sha256(key.encode()).hexdigest()[:16]

    def image_hash(self, image: AnnotatedImage) -> str:
        """SHA-256 of the image file bytes and the flipped flag (memoised per file state)."""
        try:
            st = image.path.stat()
        except FileNotFoundError as e:
            raise DataError(f"{image.path}: image file not found") from e
        memo = (str(image.path), st.st_size, st.st_mtime_ns, image.flipped)
        if memo not in self._hashes:
            h = hashlib.sha256(image.path.read_bytes())
            h.update(b":flip" if image.flipped else b":orig")
            self._hashes[memo] = h.hexdigest()
        return self._hashes[memo]

    def entry_path(self, encoder_dir: Path, image: AnnotatedImage) -> Path:
        """Where ``image``'s entry lives under ``encoder_dir`` (from :meth:`encoder_dir`)."""
        digest = self.image_hash(image)
        return encoder_dir / digest[:2] / f"{digest}.safetensors"

    # ----------------------------------------------------------------------------- entries
    def _finish(self, features: torch.Tensor) -> torch.Tensor:
        """What a stored entry loads back as (float16 storage is re-normalised)."""
        if features.shape[0] >= self.half_min_channels:
            return F.normalize(features.to(torch.float16).float(), dim=0)
        return features.float()

    def _load(
        self, path: Path, image: AnnotatedImage, key: str, read: bool = True
    ) -> DescriptorMap | bool | None:
        """The entry at ``path`` if it exists and is valid for ``image``, else None.

        With ``read=False`` only the header is checked (sizes, metadata) and True is returned:
        enough to skip an entry in a dataset-wide run without reading its data."""
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                shape = tuple(f.get_slice("features").get_shape())
                feats = f.get_tensor("features") if read else None
            grid = FeatureGrid(
                height=int(meta["height"]),
                width=int(meta["width"]),
                h=int(meta["h"]),
                w=int(meta["w"]),
            )
            ok = (
                meta.get("encoder") == key
                and (grid.height, grid.width) == (image.height, image.width)
                and len(shape) == 3
                and shape[1:] == (grid.h, grid.w)
                and (feats is None or bool(torch.isfinite(feats).all()))
            )
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
            ok = False
        if not ok:
            self.stats["corrupt"] += 1
            return None
        if feats is None:
            return True
        feats = feats.float()
        if feats.shape[0] >= self.half_min_channels:
            feats = F.normalize(feats, dim=0)
        return DescriptorMap(feats, grid)

    def _save(self, path: Path, dmap: DescriptorMap, image: AnnotatedImage, key: str) -> None:
        feats = dmap.features.detach().cpu().contiguous()
        store = (
            feats.to(torch.float16) if feats.shape[0] >= self.half_min_channels else feats.float()
        )
        g = dmap.grid
        meta = {
            "height": str(g.height),
            "width": str(g.width),
            "h": str(g.h),
            "w": str(g.w),
            "encoder": key,
            "image": image.key,
        }
        atomic_write(path, lambda p: save_file({"features": store}, str(p), metadata=meta))

    # ----------------------------------------------------------------------------- API
    def encode(
        self, encoder: Encoder, images: Sequence[AnnotatedImage], progress: bool = True
    ) -> list[DescriptorMap]:
        """Descriptor maps of ``images``: cached ones are loaded, the misses are computed in
        batches of ``encoder.batch_size`` (8 when it has none) and written as they finish."""
        out = self._run(encoder, images, progress, keep=True)
        missing = [images[i].key for i, m in enumerate(out) if m is None]
        if missing:
            raise RuntimeError(f"cache produced no map for {missing}")
        return out  # type: ignore[return-value]

    def precompute(
        self, encoder: Encoder, images: Sequence[AnnotatedImage], progress: bool = True
    ) -> None:
        """Compute and store the missing entries only; nothing is kept in memory and valid
        entries are checked by their header alone (dataset-wide runs, resumable)."""
        self._run(encoder, images, progress, keep=False)

    def _run(
        self, encoder: Encoder, images: Sequence[AnnotatedImage], progress: bool, keep: bool
    ) -> list[DescriptorMap | None]:
        key = encoder.cache_key()  # once: it may stat the weight files
        edir = self._key_dir(key)
        out: list[DescriptorMap | None] = [None] * len(images)
        todo: dict[Path, list[int]] = {}
        for i, image in enumerate(images):
            path = self.entry_path(edir, image)
            if path in todo:  # the same content twice: compute once
                todo[path].append(i)
                continue
            hit = self._load(path, image, key, read=keep)
            if hit is None:
                todo[path] = [i]
            else:
                self.stats["hits"] += 1
                out[i] = hit if keep else None  # type: ignore[assignment]
        if not todo:
            return out
        if not (edir / "encoder.txt").exists():
            write_text(edir / "encoder.txt", key + "\n")
        paths = list(todo)
        chunk = max(1, int(getattr(encoder, "batch_size", 8)))
        bar = tqdm(
            total=len(paths), desc=f"features {encoder.name}", unit="img", disable=not progress
        )
        with bar:
            for s in range(0, len(paths), chunk):
                part = paths[s : s + chunk]
                recs = [images[todo[p][0]] for p in part]
                maps = encoder.encode(recs)
                if len(maps) != len(recs):
                    raise RuntimeError(
                        f"encoder {encoder.name} returned {len(maps)} maps for {len(recs)} images"
                    )
                for p, rec, dmap in zip(part, recs, maps, strict=True):
                    self._save(p, dmap, rec, key)
                    if keep:
                        done = DescriptorMap(self._finish(dmap.features.detach().cpu()), dmap.grid)
                        for i in todo[p]:
                            out[i] = done
                self.stats["misses"] += len(part)
                bar.update(len(part))
        return out
