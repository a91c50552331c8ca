"""DINOv2 + Stable Diffusion features: the raw GeoAware input and the DINO+SD baseline.

:class:`DinoSDFeatures` builds GeoAware-SC's ``desc_gathered`` (``pck_train.py:
prepare_feature_paths_and_load``): ``[s3, s4, s5, dino]`` on one 60 x 60 grid, s4/s5 (and any
other map not already at the grid size) bilinearly resized, giving 640+1280+1280+768 = 3968
channels.

:class:`DinoSDEncoder` is the per-image DINO+SD baseline: the SD part (s3|s4|s5) and the DINO part
are L2-normalised separately and concatenated with equal weight, as GeoAware-SC's zero-shot setting
(``normalize_feats`` with ``DUMMY_NET``) and sd-dino's fusion (``FUSE_DINO``, ``WEIGHT = 1``) do;
the result is divided by sqrt(2) so that it is unit-norm. sd-dino's default additionally reduces
each SD layer by a PCA fitted jointly on the two images of a pair (``co_pca``); a per-image
encoder cannot do that, so this baseline uses the raw SD channels like GeoAware's zero-shot run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from semalign3d.config import EncoderConfig
from semalign3d.data.records import AnnotatedImage
from semalign3d.models import runtime
from semalign3d.models.base import DescriptorMap
from semalign3d.models.dinov2 import DinoV2Backbone
from semalign3d.models.sd import StableDiffusionFeatures, concat_sd


def default_conf() -> EncoderConfig:
    """GeoAware's inputs: DINOv2-B/14 at 840 px, SD-1.5 at 960 px, one 60 x 60 grid."""
    return EncoderConfig(name="dino_sd")


def normalize_sources(features: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Equal-weight fusion: L2-normalise each channel group, concatenate, divide by sqrt(groups).

    Args:
        features: ``[B x sum(dims) x h x w]``.
        dims: channels of each group, in order.
    Returns:
        ``[B x sum(dims) x h x w]`` with unit norm per location.
    """
    if sum(dims) != features.shape[1]:
        raise ValueError(f"groups {list(dims)} do not add up to {features.shape[1]} channels")
    parts = torch.split(features, list(dims), dim=1)
    return torch.cat([F.normalize(p, dim=1) for p in parts], dim=1) / math.sqrt(len(dims))


class DinoSDFeatures:
    """Raw ``[s3, s4, s5, dino]`` maps on a ``grid_size`` grid. Loads both models once."""

    def __init__(
        self,
        cfg: EncoderConfig,
        device: torch.device,
        dtype: torch.dtype,
        dino: DinoV2Backbone | None = None,
        sd: StableDiffusionFeatures | None = None,
    ):
        """Loads the models named in ``cfg`` unless ready ``dino`` / ``sd`` parts are given."""
        self.cfg, self.device = cfg, device
        self.dino = dino or DinoV2Backbone.load(cfg.dinov2_model, cfg.dinov2_layer, device, dtype)
        self.sd = sd or StableDiffusionFeatures.load(cfg, device, dtype)
        sd_dims = [self.sd.channels[k] for k in ("s3", "s4", "s5")]
        self.dims = (*sd_dims, self.dino.channels)  # GeoAware: (640, 1280, 1280, 768)

    def __call__(
        self, images: Sequence[AnnotatedImage]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """``[B x sum(dims) x g x g]`` float32 on the device, and ``(height, width)`` per image."""
        c = self.cfg
        (dino_px, sd_px), sizes = runtime.load_square_batch(
            images, (c.dinov2_resolution, c.sd_resolution), self.device
        )
        sd = concat_sd(self.sd(sd_px), c.grid_size)
        dino = runtime.to_grid(self.dino(dino_px), c.grid_size)
        return torch.cat([sd, dino], dim=1), sizes

    def cache_key(self) -> str:
        c = self.cfg
        return (
            f"{self.dino.cache_key()}|res{c.dinov2_resolution}|{self.sd.cache_key()}"
            f"|res{c.sd_resolution}|grid{c.grid_size}"
        )


class DinoSDEncoder:
    """Unit-norm DINO+SD baseline descriptors ``[3968 x 60 x 60]`` (module docstring)."""

    name = "dino_sd"

    def __init__(self, cfg: EncoderConfig, features: DinoSDFeatures | None = None):
        """Loads the models named in ``cfg`` unless ready ``features`` are given."""
        self.cfg = cfg
        self.device = runtime.resolve_device(cfg.device)
        self.dtype = runtime.resolve_dtype(cfg.dtype, self.device)
        self.batch_size = cfg.batch_size
        self.features = features or DinoSDFeatures(cfg, self.device, self.dtype)
        d = self.features.dims
        self.groups = (sum(d[:-1]), d[-1])  # SD as one source, DINO as the other

    def encode(self, images: Sequence[AnnotatedImage]) -> list[DescriptorMap]:
        """Descriptor maps of ``images`` (flipped records are encoded mirrored)."""
        out: list[DescriptorMap] = []
        for sl in runtime.batches(len(images), self.batch_size):
            raw, sizes = self.features(images[sl])
            feats = normalize_sources(raw, self.groups)
            feats = runtime.check_finite(feats, self.name, self.dtype).cpu()
            grids = runtime.descriptor_grids(sizes, self.cfg.grid_size)
            out += [DescriptorMap(f, g) for f, g in zip(feats, grids, strict=True)]
        return out

    def cache_key(self) -> str:
        return f"dino_sd-v1|{self.features.cache_key()}|{self.dtype}"
