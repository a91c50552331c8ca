"""DINOv2 token descriptors as GeoAware-SC extracts them (method.md §2.2).

GeoAware-SC (``preprocess_map.py``, ``model_utils/extractor_dino.py``) runs the torch-hub
``dinov2_vitb14`` at 840 px with stride 14 and hooks the output of block ``layer=11`` ("token"
facet): the last of the 12 blocks, BEFORE the final LayerNorm, CLS token dropped, giving a
``768 x 60 x 60`` map. With transformers' ``Dinov2Model`` that is ``hidden_states[layer + 1]``.

Two details matter for exact agreement with the hub model:

* Pixels are ImageNet-standardised after zero padding, so the padding is ``-mean/std``, not 0.
* The hub model interpolates its 37 x 37 position embeddings with ``scale_factor=(60.1/37)``
  (``interpolate_offset=0.1``); transformers uses ``size=60``, which samples slightly different
  positions. We install the hub rule on our model instance (:func:`hub_interpolate_pos_encoding`).

Remaining difference: GeoAware resizes with PIL Lanczos after padding-by-resize; we pad then
resize with antialiased bilinear interpolation (no torchvision dependency).
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from semalign3d.config import EncoderConfig
from semalign3d.data.records import AnnotatedImage
from semalign3d.models import runtime
from semalign3d.models.base import DescriptorMap
from semalign3d.models.weights import fingerprint, load_pretrained

#: torch-hub DINOv2 samples position embeddings at (n + offset) / 37 (``interpolate_offset``).
HUB_INTERPOLATE_OFFSET = 0.1


def default_conf() -> EncoderConfig:
    """GeoAware's DINOv2 setting: ViT-B/14, block 11 tokens, 840 px -> 60 x 60 x 768."""
    return EncoderConfig(name="dinov2")


def hub_interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int):
    """Position embeddings resized like torch-hub DINOv2 (bicubic, ``scale_factor`` with +0.1).

    Bound to a ``Dinov2Embeddings`` instance; ``embeddings: [B x 1+N x C]``."""
    pos = self.position_embeddings
    n_patches, n_pos = embeddings.shape[1] - 1, pos.shape[1] - 1
    if n_patches == n_pos and height == width:
        return pos
    ph, pw = self.patch_embeddings.patch_size
    h0, w0 = height // ph, width // pw
    m = int(math.sqrt(n_pos))
    grid = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid,
        scale_factor=((h0 + HUB_INTERPOLATE_OFFSET) / m, (w0 + HUB_INTERPOLATE_OFFSET) / m),
        mode="bicubic",
        align_corners=False,
    )
    if grid.shape[-2:] != (h0, w0):
        raise RuntimeError(f"position grid {tuple(grid.shape[-2:])} != patch grid {(h0, w0)}")
    grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    return torch.cat([pos[:, :1], grid], dim=1)


class DinoV2Backbone:
    """A ``Dinov2Model`` cut after block ``layer``, with the hub's position interpolation.

    Args:
        net: a transformers ``Dinov2Model`` (see :meth:`load`); it is modified in place.
        layer: 0-based block whose output tokens are returned.
        device, dtype: where and in which precision to run (autocast for reduced dtypes).
        spec: where ``net`` came from, for :meth:`cache_key`.
    """

    def __init__(
        self, net, layer: int, device: torch.device, dtype: torch.dtype, spec: str = "in-memory"
    ):
        n_blocks = len(net.encoder.layer)
        if not 0 <= layer < n_blocks:
            raise ValueError(f"dinov2_layer={layer} but {spec} has blocks 0..{n_blocks - 1}")
        # blocks after `layer` never influence its output: drop them to save time and memory
        net.encoder.layer = net.encoder.layer[: layer + 1]
        net.embeddings.interpolate_pos_encoding = types.MethodType(
            hub_interpolate_pos_encoding, net.embeddings
        )
        self.net = net.eval().requires_grad_(False).to(device)
        self.patch_size = int(net.config.patch_size)
        self.channels = int(net.config.hidden_size)
        self.device, self.dtype = device, dtype
        self.spec, self.layer = spec, layer

    @classmethod
    def load(cls, model: str, layer: int, device: torch.device, dtype: torch.dtype):
        """From a hub id or local folder (one helpful error when unavailable)."""
        from transformers import Dinov2Model

        net = load_pretrained(
            Dinov2Model.from_pretrained,
            model,
            what="the DINOv2 backbone",
            option="encoder.dinov2_model / --dinov2-model",
        )
        return cls(net, layer, device, dtype, spec=model)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Token map of square images.

        Args:
            pixels: ``[B x 3 x S x S]`` in ``[0, 1]``, ``S`` a multiple of the patch size.
        Returns:
            ``[B x C x S/p x S/p]`` float32 raw tokens (not normalised).
        """
        b, _, h, w = pixels.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"DINOv2 input {h}x{w} is not a multiple of {self.patch_size}")
        x = runtime.imagenet_normalize(pixels.to(self.device))
        with runtime.autocast(self.device, self.dtype):
            out = self.net(pixel_values=x, output_hidden_states=True)
        tokens = out.hidden_states[-1][:, 1:].float()  # drop CLS
        gh, gw = h // self.patch_size, w // self.patch_size
        return tokens.transpose(1, 2).reshape(b, self.channels, gh, gw)

    def cache_key(self) -> str:
        return f"dinov2:{fingerprint(self.spec)}:L{self.layer}:off{HUB_INTERPOLATE_OFFSET}"


class DinoV2Encoder:
    """Unit-norm DINOv2 token descriptors ``[C x grid x grid]`` (C = 768 for ViT-B/14)."""

    name = "dinov2"

    def __init__(self, cfg: EncoderConfig, backbone: DinoV2Backbone | None = None):
        """Loads ``cfg.dinov2_model`` unless a ready ``backbone`` is given."""
        self.cfg = cfg
        self.device = runtime.resolve_device(cfg.device)
        self.dtype = runtime.resolve_dtype(cfg.dtype, self.device)
        self.batch_size = cfg.batch_size
        self.backbone = backbone or DinoV2Backbone.load(
            cfg.dinov2_model, cfg.dinov2_layer, self.device, self.dtype
        )

    def encode(self, images: Sequence[AnnotatedImage]) -> list[DescriptorMap]:
        """Descriptor maps of ``images`` (flipped records are encoded mirrored)."""
        out: list[DescriptorMap] = []
        for sl in runtime.batches(len(images), self.batch_size):
            (pixels,), sizes = runtime.load_square_batch(
                images[sl], (self.cfg.dinov2_resolution,), self.device
            )
            feats = runtime.to_grid(self.backbone(pixels), self.cfg.grid_size)
            feats = runtime.check_finite(F.normalize(feats, dim=1), self.name, self.dtype).cpu()
            grids = runtime.descriptor_grids(sizes, self.cfg.grid_size)
            out += [DescriptorMap(f, g) for f, g in zip(feats, grids, strict=True)]
        return out

    def cache_key(self) -> str:
        c = self.cfg
        return (
            f"dinov2-v1|{self.backbone.cache_key()}|res{c.dinov2_resolution}|grid{c.grid_size}"
            f"|{self.dtype}"
        )
