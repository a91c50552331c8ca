"""GeoAware-SC's supervised aggregation of SD + DINOv2 features (method.md §2.2).

The network (GeoAware-SC ``model_utils/projection_network.py: AggregationNetwork`` with
``feature_dims=[640, 1280, 1280, 768], projection_dim=768``, blocks from
``model_utils/resnet.py: BottleneckBlock``, a copy of detectron2's) takes the concatenation
``[s3, s4, s5, dino]`` (3968 ch, 60 x 60) and, per source ``i``:

* one ResNet bottleneck block: 1x1 conv (-> 192 = 768/4) - GN - ReLU, 3x3 conv - GN - ReLU,
  1x1 conv (-> 768) - GN, plus a shortcut (1x1 conv - GN when the source does not have 768
  channels, identity for DINO), then ReLU. Convolutions have no bias; GN uses 32 groups.

The four 768-channel outputs are summed with ``softmax(mixing_weights)``. The projection to 768
is the bottleneck's last convolution (there is no separate projection layer; ``last_layer`` is
None in the released model). GeoAware then L2-normalises per location (README: ``desc / (norm +
1e-8)``). ``logit_scale`` / ``self_logit_scale`` are training temperatures, unused at inference.

The released checkpoint is ``results_spair/best_856.PTH`` in the GeoAware-SC repository.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semalign3d.config import EncoderConfig
from semalign3d.data.records import AnnotatedImage
from semalign3d.models import runtime
from semalign3d.models.base import DescriptorMap
from semalign3d.models.weights import ModelUnavailableError, fingerprint, load_checkpoint

#: GeoAware's feature groups in concatenation order: s3, s4, s5 (SD) and DINOv2 ViT-B/14.
GEOAWARE_FEATURE_DIMS = (640, 1280, 1280, 768)
GEOAWARE_PROJECTION_DIM = 768
GEOAWARE_SOURCE = (
    "results_spair/best_856.PTH in the GeoAware-SC repository "
    "(https://github.com/Junyi42/GeoAware-SC, 'Inference in the supervised setting')"
)
#: checkpoint entries that only matter for training
TRAINING_ONLY_KEYS = ("logit_scale", "self_logit_scale")


def default_conf() -> EncoderConfig:
    """GeoAware's supervised descriptor; set ``geoaware_checkpoint`` to ``best_856.PTH``."""
    return EncoderConfig(name="geoaware")


class ConvNorm(nn.Conv2d):
    """Bias-free convolution followed by GroupNorm (state-dict keys ``weight``, ``norm.*``)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int):
        super().__init__(cin, cout, kernel, padding=(kernel - 1) // 2, bias=False)
        self.norm = nn.GroupNorm(groups, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BottleneckBlock(nn.Module):
    """1x1 - 3x3 - 1x1 bottleneck with GroupNorm and a projection shortcut if channels change."""

    def __init__(self, cin: int, cout: int, bottleneck: int, groups: int):
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, groups) if cin != cout else None
        self.conv1 = ConvNorm(cin, bottleneck, 1, groups)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, groups)
        self.conv3 = ConvNorm(bottleneck, cout, 1, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B x cin x h x w]`` -> ``[B x cout x h x w]``."""
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class AggregationNetwork(nn.Module):
    """GeoAware-SC's aggregation network (module docstring); parameter names match its checkpoint.

    Args:
        feature_dims: channels of each source, in concatenation order.
        projection_dim: output channels (768).
        num_norm_groups: GroupNorm groups (32).
        bottleneck_channels: default ``projection_dim // 4`` (192).
    """

    def __init__(
        self,
        feature_dims: Sequence[int] = GEOAWARE_FEATURE_DIMS,
        projection_dim: int = GEOAWARE_PROJECTION_DIM,
        num_norm_groups: int = 32,
        bottleneck_channels: int | None = None,
    ):
        super().__init__()
        self.feature_dims = tuple(int(d) for d in feature_dims)
        self.projection_dim = projection_dim
        width = bottleneck_channels or projection_dim // 4
        self.bottleneck_layers = nn.ModuleList(
            nn.Sequential(BottleneckBlock(d, projection_dim, width, num_norm_groups))
            for d in self.feature_dims
        )
        self.mixing_weights = nn.Parameter(torch.ones(len(self.feature_dims)))
        # training temperatures of GeoAware's contrastive loss, kept so checkpoints round-trip
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.self_logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B x sum(feature_dims) x h x w]`` -> ``[B x projection_dim x h x w]``, unnormalised."""
        if features.shape[1] != sum(self.feature_dims):
            raise ValueError(
                f"aggregation expects {sum(self.feature_dims)} channels "
                f"{list(self.feature_dims)}, got {features.shape[1]}"
            )
        weights = torch.softmax(self.mixing_weights, dim=0)
        parts = torch.split(features, list(self.feature_dims), dim=1)
        out = weights[0] * self.bottleneck_layers[0](parts[0])
        for w, layer, x in zip(weights[1:], self.bottleneck_layers[1:], parts[1:], strict=True):
            out = out + w * layer(x)
        return out


def _infer_architecture(state: dict[str, torch.Tensor]) -> tuple[list[int], int, int]:
    dims, i = [], 0
    while f"bottleneck_layers.{i}.0.conv1.weight" in state:
        dims.append(int(state[f"bottleneck_layers.{i}.0.conv1.weight"].shape[1]))
        i += 1
    if not dims:
        return list(GEOAWARE_FEATURE_DIMS), GEOAWARE_PROJECTION_DIM, GEOAWARE_PROJECTION_DIM // 4
    proj = int(state["bottleneck_layers.0.0.conv3.weight"].shape[0])
    width = int(state["bottleneck_layers.0.0.conv1.weight"].shape[0])
    return dims, proj, width


def load_geoaware_aggregation(path: str, num_norm_groups: int = 32) -> AggregationNetwork:
    """GeoAware-SC's aggregation network from its checkpoint, in eval mode.

    The architecture (sources, widths) is read from the tensor shapes; names must match exactly,
    otherwise the error lists missing and unexpected keys. Loaded with ``weights_only=True``.

    Args:
        path: e.g. ``results_spair/best_856.PTH``.
        num_norm_groups: GroupNorm groups (not stored in the checkpoint; GeoAware: 32).
    """
    file, state = load_checkpoint(
        path,
        what="GeoAware-SC's aggregation network",
        option="encoder.geoaware_checkpoint / --geoaware-checkpoint",
        source=GEOAWARE_SOURCE,
    )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelUnavailableError(f"{file}: expected a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    dims, proj, width = _infer_architecture(state)
    net = AggregationNetwork(dims, proj, num_norm_groups, width)
    expected = set(net.state_dict())
    given = set(state)
    missing = sorted(expected - given - set(TRAINING_ONLY_KEYS))
    unexpected = sorted(given - expected)
    if missing or unexpected:
        raise ModelUnavailableError(
            f"{file}: parameter names do not match GeoAware-SC's AggregationNetwork.\n"
            f"  missing keys ({len(missing)}): {missing}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected}"
        )
    full = {**net.state_dict(), **state}
    try:
        net.load_state_dict(full, strict=True)
    except RuntimeError as e:
        raise ModelUnavailableError(f"{file}: tensor shapes do not fit: {e}") from e
    return net.eval().requires_grad_(False)


class GeoAwareEncoder:
    """Unit-norm GeoAware-SC descriptors ``[768 x 60 x 60]``: aggregation of DINO + SD features."""

    name = "geoaware"

    def __init__(self, cfg: EncoderConfig, net: AggregationNetwork | None = None, features=None):
        """Loads ``cfg.geoaware_checkpoint`` and the models named in ``cfg`` unless a ready
        aggregation ``net`` / ``DinoSDFeatures`` are given."""
        from semalign3d.models.dino_sd import DinoSDFeatures

        self.cfg = cfg
        self.device = runtime.resolve_device(cfg.device)
        self.dtype = runtime.resolve_dtype(cfg.dtype, self.device)
        self.batch_size = cfg.batch_size
        # load the small checkpoint first: a wrong path fails before minutes of model loading
        net = net or load_geoaware_aggregation(cfg.geoaware_checkpoint)
        self.net = net.eval().requires_grad_(False).to(self.device)
        self.features = features or DinoSDFeatures(cfg, self.device, self.dtype)
        if self.features.dims != self.net.feature_dims:
            raise ValueError(
                f"{cfg.geoaware_checkpoint}: aggregation expects sources "
                f"{list(self.net.feature_dims)} but the models give {list(self.features.dims)}"
            )

    @torch.no_grad()  # not inference_mode: callers may use the outputs under autograd
    def encode(self, images: Sequence[AnnotatedImage]) -> list[DescriptorMap]:
        """Descriptor maps of ``images`` (flipped records are encoded mirrored)."""
        out: list[DescriptorMap] = []
        for sl in runtime.batches(len(images), self.batch_size):
            raw, sizes = self.features(images[sl])
            feats = F.normalize(self.net(raw.float()), dim=1)
            feats = runtime.check_finite(feats, self.name, self.dtype).cpu()
            grids = runtime.descriptor_grids(sizes, self.cfg.grid_size)
            out += [DescriptorMap(f, g) for f, g in zip(feats, grids, strict=True)]
        return out

    def cache_key(self) -> str:
        return (
            f"geoaware-v1|{fingerprint(self.cfg.geoaware_checkpoint)}|"
            f"{self.features.cache_key()}|{self.dtype}"
        )
