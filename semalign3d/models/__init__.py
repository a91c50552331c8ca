"""Model registry: descriptor encoders, depth models and mask sources by configured name.

Importing this package is cheap and never touches the network: every builder imports its model
module (and transformers/diffusers) only when called.

>>> enc = build_encoder(EncoderConfig(name="geoaware", geoaware_checkpoint="best_856.PTH"))
>>> maps = FeatureCache("cache/").encode(enc, images)       # semalign3d.models.cache
"""

from __future__ import annotations

from pathlib import Path

from semalign3d.config import DepthConfig, EncoderConfig, MaskConfig
from semalign3d.models.base import DepthModel, Encoder, MaskModel

__all__ = ["build_depth", "build_encoder", "build_masks", "load_geoaware_aggregation"]


def _need_root(root: str | Path | None, what: str) -> Path:
    if root is None:
        raise ValueError(f"{what} needs the dataset root (root=...)")
    return Path(root)


def build_encoder(cfg: EncoderConfig, root: str | Path | None = None) -> Encoder:
    """The encoder named by ``cfg.name`` (``root``: dataset root, used by ``oracle`` only)."""
    if cfg.name == "oracle":
        data_root = _need_root(root, "the oracle encoder")
        from semalign3d.models.oracle import OracleEncoder

        return OracleEncoder(data_root, grid_size=cfg.grid_size)
    if cfg.name == "dinov2":
        from semalign3d.models.dinov2 import DinoV2Encoder

        return DinoV2Encoder(cfg)
    if cfg.name == "sd":
        from semalign3d.models.sd import SDEncoder

        return SDEncoder(cfg)
    if cfg.name == "dino_sd":
        from semalign3d.models.dino_sd import DinoSDEncoder

        return DinoSDEncoder(cfg)
    if cfg.name == "geoaware":
        from semalign3d.models.geoaware import GeoAwareEncoder

        return GeoAwareEncoder(cfg)
    raise ValueError(f"unknown encoder '{cfg.name}'")


def build_depth(cfg: DepthConfig, root: str | Path | None = None) -> DepthModel:
    """The depth model named by ``cfg.name`` (``root``: dataset root, used by ``synthetic``)."""
    if cfg.name == "synthetic":
        data_root = _need_root(root, "synthetic depth")
        from semalign3d.models.synthetic_depth import SyntheticDepth

        return SyntheticDepth(data_root)
    if cfg.name == "depth_anything":
        from semalign3d.models.depth_anything import DepthAnythingV2

        return DepthAnythingV2(cfg)
    raise ValueError(f"unknown depth model '{cfg.name}'")


def build_masks(cfg: MaskConfig, source: str, root: str | Path | None = None) -> MaskModel:
    """The mask source ``source`` (e.g. ``cfg.train_source`` or ``cfg.test_source``).

    One of ``ground_truth``, ``odise`` (needs ``root``), ``bbox``, ``sam_keypoints``,
    ``sam_box``, ``none``."""
    from semalign3d.models import masks

    if source == "ground_truth":
        return masks.GroundTruthMasks()
    if source == "odise":
        return masks.OdiseMasks(
            _need_root(root, "ODISE masks"), cfg.odise_dir, threshold=cfg.odise_threshold
        )
    if source == "bbox":
        return masks.BoxMasks()
    if source == "none":
        return masks.FullMasks()
    if source == "sam_keypoints":
        return masks.SamKeypointMasks(cfg)
    if source == "sam_box":
        return masks.SamBoxMasks(cfg)
    raise ValueError(f"unknown mask source '{source}'; expected one of {list(masks.SOURCES)}")


def load_geoaware_aggregation(path: str | Path):
    """GeoAware-SC's aggregation network (``best_856.PTH``) as an eval-mode ``torch.nn.Module``."""
    from semalign3d.models.geoaware import load_geoaware_aggregation as load

    return load(str(path))
