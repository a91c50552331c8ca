"""FeatureCache: hits, misses, corrupt entries, content keys, storage dtype, resumable runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from semalign3d.data.flips import flip_image, num_keypoints
from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.data.spair import load_rgb
from semalign3d.models.base import DescriptorMap, FeatureGrid
from semalign3d.models.cache import FeatureCache


class CountingEncoder:
    """Deterministic descriptors from the pixels (mean colour per cell plus fixed channels)."""

    name = "counting"

    def __init__(self, channels: int = 8, grid: int = 4, batch_size: int = 2, tag: str = "a"):
        self.channels, self.grid, self.batch_size, self.tag = channels, grid, batch_size, tag
        self.calls: list[int] = []
        self.fail_after: int | None = None

    def encode(self, images):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(len(images))
        out = []
        for im in images:
            rgb = load_rgb(im).float()
            cells = F.adaptive_avg_pool2d(rgb[None], self.grid)[0]  # [3 x g x g]
            extra = torch.linspace(1, 2, self.channels - 3)[:, None, None].expand(
                -1, self.grid, self.grid
            )
            feats = F.normalize(torch.cat([cells, extra]), dim=0)
            out.append(DescriptorMap(feats, FeatureGrid(im.height, im.width, self.grid, self.grid)))
        return out

    def cache_key(self) -> str:
        return f"counting|{self.channels}|{self.grid}|{self.tag}"


def make_image(path: Path, height: int, width: int, seed: int) -> AnnotatedImage:
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    k = num_keypoints("dog")
    return AnnotatedImage(
        name=path.stem,
        category="dog",
        path=path,
        width=width,
        height=height,
        bbox=(1.0, 1.0, width - 2.0, height - 2.0),
        keypoints=torch.full((k, 2), float("nan")),
        visible=torch.zeros(k, dtype=torch.bool),
    )


@pytest.fixture
def images(tmp_path):
    return [make_image(tmp_path / "img" / f"{i}.png", 12 + i, 20 - i, seed=i) for i in range(5)]


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.safetensors"))


def test_miss_then_hit_returns_identical_maps(tmp_path, images):
    enc = CountingEncoder()
    cache = FeatureCache(tmp_path / "cache")
    first = cache.encode(enc, images, progress=False)
    assert enc.calls == [2, 2, 1]  # misses computed in encoder-sized batches
    assert cache.stats == {"hits": 0, "misses": 5, "corrupt": 0}
    assert len(entries(tmp_path / "cache")) == 5
    again = FeatureCache(tmp_path / "cache")
    second = again.encode(enc, images, progress=False)
    assert enc.calls == [2, 2, 1]  # nothing recomputed
    assert again.stats == {"hits": 5, "misses": 0, "corrupt": 0}
    for a, b, im in zip(first, second, images, strict=True):
        assert torch.equal(a.features, b.features)
        assert a.grid == b.grid == FeatureGrid(im.height, im.width, 4, 4)
    key = (tmp_path / "cache").glob("*/encoder.txt")
    assert next(key).read_text().strip() == enc.cache_key()


def test_empty_input():
    assert (
        FeatureCache("/nonexistent-cache-dir").encode(CountingEncoder(), [], progress=False) == []
    )


def test_key_is_content_flip_and_encoder(tmp_path, images):
    enc = CountingEncoder()
    cache = FeatureCache(tmp_path / "cache")
    cache.encode(enc, images[:1], progress=False)
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(images[0].path, copy)
    moved = AnnotatedImage(**{**images[0].__dict__, "path": copy, "name": "renamed"})
    cache.encode(enc, [moved], progress=False)
    assert cache.stats["hits"] == 1  # same bytes, other file name: hit
    flipped = cache.encode(enc, [flip_image(images[0])], progress=False)[0]
    assert cache.stats["misses"] == 2  # the mirrored view is its own entry
    assert torch.equal(flipped.features, enc.encode([flip_image(images[0])])[0].features)
    cache.encode(CountingEncoder(tag="b"), images[:1], progress=False)
    assert cache.stats["misses"] == 3  # another encoder key: miss
    Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(images[0].path)  # edited in place
    cache.encode(enc, images[:1], progress=False)
    assert cache.stats["misses"] == 4


def test_duplicates_are_computed_once(tmp_path, images):
    enc = CountingEncoder(batch_size=8)
    out = FeatureCache(tmp_path / "c").encode(
        enc, [images[1], images[1], images[2]], progress=False
    )
    assert enc.calls == [2]
    assert torch.equal(out[0].features, out[1].features)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "shape", "encoder", "size", "nan"])
def test_corrupt_entries_are_recomputed(tmp_path, images, damage):
    enc = CountingEncoder()
    cache = FeatureCache(tmp_path / "cache")
    good = cache.encode(enc, images[:1], progress=False)[0]
    (path,) = entries(tmp_path / "cache")
    meta = {
        "height": "12",
        "width": "20",
        "h": "4",
        "w": "4",
        "encoder": enc.cache_key(),
        "image": "x",
    }
    feats = good.features.clone()
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "shape":
        save_file({"features": feats[:, :3].contiguous()}, str(path), metadata=meta)
    elif damage == "encoder":
        save_file({"features": feats}, str(path), metadata={**meta, "encoder": "other"})
    elif damage == "size":
        save_file({"features": feats}, str(path), metadata={**meta, "height": "99"})
    else:
        feats[0, 0, 0] = float("nan")
        save_file({"features": feats}, str(path), metadata=meta)
    again = FeatureCache(tmp_path / "cache")
    fixed = again.encode(enc, images[:1], progress=False)[0]
    assert again.stats == {"hits": 0, "misses": 1, "corrupt": 1}
    assert torch.equal(fixed.features, good.features)
    assert FeatureCache(tmp_path / "cache").encode(enc, images[:1], progress=False)  # now valid
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["encoder"] == enc.cache_key()


def test_storage_dtype_and_roundtrip(tmp_path, images):
    small = CountingEncoder(channels=8)
    big = CountingEncoder(channels=80)
    cache = FeatureCache(tmp_path / "cache", half_min_channels=64)
    s = cache.encode(small, images[:1], progress=False)[0]
    b = cache.encode(big, images[:1], progress=False)[0]
    dtypes = {}
    for p in entries(tmp_path / "cache"):
        with safe_open(str(p), framework="pt") as f:
            t = f.get_tensor("features")
            dtypes[t.shape[0]] = t.dtype
    assert dtypes == {8: torch.float32, 80: torch.float16}
    assert torch.equal(s.features, small.encode(images[:1])[0].features)  # float32: exact
    direct = big.encode(images[:1])[0].features
    assert (b.features - direct).abs().max() < 2e-3  # float16 rounding only
    assert torch.allclose(b.features.norm(dim=0), torch.ones(4, 4), atol=1e-6)
    hit = FeatureCache(tmp_path / "cache").encode(big, images[:1], progress=False)[0]
    assert torch.equal(hit.features, b.features)  # miss and hit agree exactly


def test_killed_run_resumes_where_it_stopped(tmp_path, images):
    enc = CountingEncoder(batch_size=2)
    enc.fail_after = 2
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(tmp_path / "cache").encode(enc, images, progress=False)
    assert len(entries(tmp_path / "cache")) == 4  # two finished batches were kept
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    enc.fail_after = None
    cache = FeatureCache(tmp_path / "cache")
    cache.encode(enc, images, progress=True)
    assert enc.calls == [2, 2, 1]
    assert cache.stats == {"hits": 4, "misses": 1, "corrupt": 0}


def test_wrong_encoder_output_and_missing_file(tmp_path, images):
    class Broken(CountingEncoder):
        def encode(self, imgs):
            return super().encode(imgs)[:-1]

    with pytest.raises(RuntimeError, match="returned 1 maps for 2 images"):
        FeatureCache(tmp_path / "c").encode(Broken(), images[:2], progress=False)
    gone = AnnotatedImage(**{**images[0].__dict__, "path": tmp_path / "missing.png"})
    with pytest.raises(DataError, match="missing.png: image file not found"):
        FeatureCache(tmp_path / "c").encode(CountingEncoder(), [gone], progress=False)


def test_precompute_keeps_nothing_and_checks_headers(tmp_path, images):
    enc = CountingEncoder(batch_size=2)
    cache = FeatureCache(tmp_path / "cache")
    assert cache.precompute(enc, images, progress=False) is None
    assert enc.calls == [2, 2, 1] and len(entries(tmp_path / "cache")) == 5
    first, second = entries(tmp_path / "cache")[:2]
    first.write_bytes(first.read_bytes()[:-16])  # truncated data: the header no longer fits
    second.write_bytes(b"\x00" * 8)
    again = FeatureCache(tmp_path / "cache")
    again.precompute(enc, images, progress=False)
    assert again.stats == {"hits": 3, "misses": 2, "corrupt": 2}
    assert enc.calls == [2, 2, 1, 2]
    maps = FeatureCache(tmp_path / "cache").encode(enc, images, progress=False)
    direct = enc.encode(images)
    assert all(torch.equal(a.features, b.features) for a, b in zip(maps, direct, strict=True))
