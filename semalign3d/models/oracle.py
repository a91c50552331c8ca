"""Oracle encoder: LVM-like descriptors simulated from the synthetic dataset's surface coordinates.

A fixed per-category embedding maps normalised *template* coordinates ``c`` of the visible surface
(``Oracle/<cat>/<name>.npz``, written by ``semalign3d.data.synthetic``) to unit vectors:

    f(c, part) = normalize( sqrt(1 - beta) rff(c_eff) + sqrt(beta) e_part + a * shift_part )

with random Fourier features ``rff(c) = sqrt(2 / C) cos(W c + b)``, ``W ~ N(0, 1 / bandwidth^2)``
(a Gaussian kernel of that length scale), the mirror blend ``c_eff = ((1 - s) x + s |x|, y, z)``
(``s = 1``: left and right parts look the same, the failure mode of real LVMs, method.md §7),
a part-identity vector ``e_part`` and a per-instance appearance shift. Samples are averaged over
each grid cell (patch features mix object and background at the outline), object features spill
onto nearby background cells (a receptive field of ``context`` cells), the background gets an
unrelated smooth random field, padding cells a constant vector, and every cell gets Gaussian noise
``noise / sqrt(C)`` per dimension before the final normalisation. Everything is deterministic per
image; a mirrored record is encoded as the mirrored image (maps flipped, ``x -> -x``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.data.synthetic.generate import OracleKnobs, read_metadata
from semalign3d.models.base import DescriptorMap, FeatureGrid

MAX_PARTS = 16  # part-identity table size (families have at most 7 parts)


@dataclass(frozen=True)
class CategoryEmbedding:
    """The fixed embedding of one category: ``weights [C x 3]``, ``phase [C]``,
    ``parts [MAX_PARTS x C]`` unit rows."""

    weights: torch.Tensor
    phase: torch.Tensor
    parts: torch.Tensor


def category_embedding(
    category: str, channels: int, bandwidth: float, seed: int
) -> CategoryEmbedding:
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), 1])
    w = rng.normal(size=(channels, 3)) / bandwidth
    b = rng.uniform(0, 2 * math.pi, channels)
    parts = rng.normal(size=(MAX_PARTS, channels))
    parts /= np.linalg.norm(parts, axis=-1, keepdims=True)
    f = torch.float32
    return CategoryEmbedding(
        torch.tensor(w, dtype=f), torch.tensor(b, dtype=f), torch.tensor(parts, dtype=f)
    )


def embed(
    coords: torch.Tensor,
    part: torch.Tensor,
    emb: CategoryEmbedding,
    symmetry: float,
    part_weight: float,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit descriptors of surface points.

    Args:
        coords: ``[N x 3]`` normalised template coordinates.
        part: ``[N]`` long part ids (0-based).
        shift: optional ``[MAX_PARTS x C]`` per-part appearance shift.
    Returns:
        ``[N x C]`` unit vectors.
    """
    x = coords[:, 0]
    c = torch.stack([(1 - symmetry) * x + symmetry * x.abs(), coords[:, 1], coords[:, 2]], -1)
    ch = emb.weights.shape[0]
    rff = torch.cos(c @ emb.weights.T + emb.phase) * math.sqrt(2.0 / ch)
    f = math.sqrt(1 - part_weight) * rff + math.sqrt(part_weight) * emb.parts[part]
    if shift is not None:
        f = f + shift[part]
    return F.normalize(f, dim=-1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[C x h x w]`` (zero padding), ``sigma`` in cells."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.conv2d(x[None], k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)
    return y[0]


def _smooth_unit_field(rng: np.random.Generator, channels: int, h: int, w: int) -> torch.Tensor:
    g = torch.tensor(rng.normal(size=(1, channels, 5, 5)), dtype=torch.float32)
    up = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)[0]
    return F.normalize(up, dim=0)


def oracle_descriptors(
    coords: torch.Tensor,
    part: torch.Tensor,
    grid: FeatureGrid,
    emb: CategoryEmbedding,
    *,
    symmetry: float,
    part_weight: float,
    noise: float,
    appearance: float,
    appearance_seed: int,
    image_rng: np.random.Generator,
    context: float = 1.0,
    flipped: bool = False,
) -> torch.Tensor:
    """Descriptor map of one image.

    Args:
        coords: ``[3 x R x R]`` template coordinates over the padded square (any R).
        part: ``[R x R]`` 0 = no object, else part id + 1.
        grid: the output grid (``h x w`` cells over the same padded square).
        image_rng: per-image generator for background and noise (drawn in a fixed order).
        context: width (cells) of the receptive-field spill of object features onto nearby
            background cells; 0 = none.
        flipped: encode the horizontally mirrored image.
    Returns:
        ``[C x h x w]`` unit-norm float32 descriptors.
    """
    ch = emb.weights.shape[0]
    r_h, r_w = part.shape
    coords = coords.float()
    part = part.long()
    if flipped:
        coords = coords.flip(-1) * torch.tensor([-1.0, 1.0, 1.0])[:, None, None]
        part = part.flip(-1)
    # per-image draws, always in the same order so that flipped == mirrored unflipped
    bg = _smooth_unit_field(image_rng, ch, grid.h, grid.w)
    pad = F.normalize(torch.tensor(image_rng.normal(size=ch), dtype=torch.float32), dim=0)
    eps = torch.tensor(image_rng.normal(size=(ch, grid.h, grid.w)), dtype=torch.float32)
    if flipped:
        bg, eps = bg.flip(-1), eps.flip(-1)
    app = np.random.default_rng(appearance_seed).normal(size=(MAX_PARTS, ch)) / math.sqrt(ch)
    shift = torch.tensor(app * appearance, dtype=torch.float32)
    # each sample belongs to the cell containing its centre
    col = ((torch.arange(r_w) + 0.5) / r_w * grid.w).long()
    row = ((torch.arange(r_h) + 0.5) / r_h * grid.h).long()
    cell = (row[:, None] * grid.w + col[None, :]).flatten()
    count = torch.bincount(cell, minlength=grid.h * grid.w).float()
    fg = part.flatten() > 0
    acc = torch.zeros(grid.h * grid.w, ch)
    if bool(fg.any()):
        c = coords.reshape(3, -1).T[fg]
        f = embed(c, part.flatten()[fg] - 1, emb, symmetry, part_weight, shift)
        acc.index_add_(0, cell[fg], f)
    frac = torch.bincount(cell[fg], minlength=grid.h * grid.w).float() / count.clamp_min(1)
    acc = acc / count.clamp_min(1)[:, None]
    if context > 0:
        # a patch's receptive field sees the object next to it: background cells near the
        # object take on the nearby object's features (thin parts stay matchable)
        ctx = _blur(acc.T.reshape(ch, grid.h, grid.w), context).reshape(ch, -1).T
        ctx_frac = _blur(frac.reshape(1, grid.h, grid.w), context).flatten()
        acc = acc + (1 - frac)[:, None] * ctx
        frac = frac + (1 - frac) * ctx_frac
    # object evidence dominates a patch it only partly covers (weight sqrt(coverage))
    weight = frac.sqrt()
    obj = acc * (weight / frac.clamp_min(1e-12))[:, None]
    valid = grid.valid_cells().flatten()
    rest = torch.where(valid[:, None], bg.reshape(ch, -1).T, pad[None])
    feats = obj + (1 - weight)[:, None] * rest
    feats = feats + noise / math.sqrt(ch) * eps.reshape(ch, -1).T
    return F.normalize(feats, dim=-1).T.reshape(ch, grid.h, grid.w).contiguous()


class OracleEncoder:
    """``Encoder`` over a synthetic dataset root (``semalign3d data synth``).

    Knobs default to the values recorded in ``ROOT/synthetic.json`` ("oracle" section) and can
    be overridden here; see the module docstring for what each one does.
    """

    name = "oracle"

    def __init__(
        self,
        root: str | Path,
        grid_size: int = 60,
        *,
        channels: int | None = None,
        symmetry: float | None = None,
        noise: float | None = None,
        appearance: float | None = None,
        bandwidth: float | None = None,
        part_weight: float | None = None,
        context: float | None = None,
        seed: int | None = None,
    ):
        self.root = Path(root)
        meta = read_metadata(self.root)
        knobs = {**dataclasses.asdict(OracleKnobs()), **meta.get("oracle", {})}

        def pick(value, key):
            return knobs[key] if value is None else value

        self.grid_size = int(grid_size)
        self.channels = int(pick(channels, "channels"))
        self.symmetry = float(pick(symmetry, "symmetry"))
        self.noise = float(pick(noise, "noise"))
        self.appearance = float(pick(appearance, "appearance"))
        self.bandwidth = float(pick(bandwidth, "bandwidth"))
        self.part_weight = float(pick(part_weight, "part_weight"))
        self.context = float(pick(context, "context"))
        self.seed = int(meta["seed"] if seed is None else seed)
        checks = {
            "grid_size >= 1": self.grid_size >= 1,
            "channels >= 1": self.channels >= 1,
            "0 <= symmetry <= 1": 0.0 <= self.symmetry <= 1.0,
            "noise >= 0": self.noise >= 0.0,
            "appearance >= 0": self.appearance >= 0.0,
            "bandwidth > 0": self.bandwidth > 0.0,
            "0 <= part_weight <= 1": 0.0 <= self.part_weight <= 1.0,
            "context >= 0": self.context >= 0.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"OracleEncoder: need {', '.join(bad)}")
        gen = json.dumps({"seed": meta["seed"], "generation": meta["generation"]}, sort_keys=True)
        self._dataset_digest = hashlib.sha1(gen.encode()).hexdigest()[:12]
        self._embeddings: dict[str, CategoryEmbedding] = {}

    def _embedding(self, category: str) -> CategoryEmbedding:
        if category not in self._embeddings:
            self._embeddings[category] = category_embedding(
                category, self.channels, self.bandwidth, self.seed
            )
        return self._embeddings[category]

    def _load(self, image: AnnotatedImage) -> dict[str, np.ndarray]:
        path = self.root / "Oracle" / image.category / f"{image.name}.npz"
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in ("coords", "part", "height", "width", "appearance_seed")}
        except FileNotFoundError as e:
            raise DataError(f"{path}: oracle maps not found (is {image.key} synthetic?)") from e
        except (KeyError, ValueError, OSError) as e:
            raise DataError(f"{path}: not a valid oracle file ({e})") from e
        if (int(data["height"]), int(data["width"])) != (image.height, image.width):
            raise DataError(
                f"{path}: maps are for a {int(data['width'])}x{int(data['height'])} image, the "
                f"record says {image.width}x{image.height}"
            )
        return data

    def encode(self, images: Sequence[AnnotatedImage]) -> list[DescriptorMap]:
        """``[C x g x g]`` unit-norm maps (mirrored records encoded as mirrored images)."""
        out = []
        for img in images:
            data = self._load(img)
            grid = FeatureGrid(img.height, img.width, self.grid_size, self.grid_size)
            rng = np.random.default_rng(
                [self.seed, zlib.crc32(f"{img.category}/{img.name}".encode())]
            )
            feats = oracle_descriptors(
                torch.from_numpy(data["coords"].astype(np.float32)),
                torch.from_numpy(data["part"].astype(np.int64)),
                grid,
                self._embedding(img.category),
                symmetry=self.symmetry,
                part_weight=self.part_weight,
                noise=self.noise,
                appearance=self.appearance,
                appearance_seed=int(data["appearance_seed"]),
                image_rng=rng,
                context=self.context,
                flipped=img.flipped,
            )
            out.append(DescriptorMap(feats, grid))
        return out

    def cache_key(self) -> str:
        return (
            f"oracle-v1-{self._dataset_digest}-g{self.grid_size}-c{self.channels}"
            f"-s{self.symmetry:g}-n{self.noise:g}-a{self.appearance:g}-b{self.bandwidth:g}"
            f"-p{self.part_weight:g}-x{self.context:g}-seed{self.seed}"
        )
