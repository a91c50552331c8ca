"""Typed, strict configuration.

Every stage reads one dataclass from here. Loading from a dict or YAML is strict: an unknown key
is an error that names the key and suggests the closest valid one, so a typo never silently falls
back to a default (the glue-factory habit).

Values marked ``# [S5]`` come from the paper's supplementary Table 5, ``# [C]`` from the
authors' released code, and ``# [R]`` are our reconstructions (method.md §5.2); every [R] choice
is a config option so the book can compare the candidates.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


# --------------------------------------------------------------------------------------------
# Piecewise-linear schedules (Table 5: "Values are linearly interpolated according to Timesteps")
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Piecewise-linear schedule: linear between breakpoints, constant before the first and after
    the last breakpoint (the code's ``LinearWeightScheduler``).

    ``Schedule([0, 300, 500], [1.0, 0.1, 0.03])(400) == 0.065``.
    A constant is ``Schedule([0], [v])``.
    """

    timesteps: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        ts, vs = tuple(float(t) for t in self.timesteps), tuple(float(v) for v in self.values)
        object.__setattr__(self, "timesteps", ts)
        object.__setattr__(self, "values", vs)
        if len(ts) == 0 or len(ts) != len(vs):
            raise ConfigError(
                f"Schedule needs as many timesteps as values (got {len(ts)} and {len(vs)})"
            )
        if any(b <= a for a, b in zip(ts, ts[1:], strict=False)):
            raise ConfigError(f"Schedule timesteps must increase strictly, got {list(ts)}")

    @classmethod
    def constant(cls, value: float) -> Schedule:
        return cls((0.0,), (float(value),))

    def __call__(self, t: float) -> float:
        ts, vs = self.timesteps, self.values
        if t <= ts[0]:
            return vs[0]
        if t >= ts[-1]:
            return vs[-1]
        i = bisect.bisect_right(ts, t)
        t0, t1, v0, v1 = ts[i - 1], ts[i], vs[i - 1], vs[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def table(self, n_steps: int, start: float = 0.0) -> list[float]:
        """The value at every step ``0 .. n_steps-1`` (precomputed once, outside a hot loop);
        with ``start > 0`` the part from ``start`` to ``n_steps`` is stretched over them."""
        k = (n_steps - start) / n_steps
        return [self(start + k * t) for t in range(n_steps)]

    def to_dict(self) -> dict[str, list[float]]:
        return {"timesteps": list(self.timesteps), "values": list(self.values)}


# --------------------------------------------------------------------------------------------
# Strict dataclass <-> dict machinery
# --------------------------------------------------------------------------------------------


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except (ConfigError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if tp is Schedule:
        if isinstance(value, Schedule):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Schedule.constant(value)
        if isinstance(value, dict):
            extra = set(value) - {"timesteps", "values"}
            if extra:
                raise ConfigError(f"{where}: unknown schedule keys {sorted(extra)}")
            return Schedule(tuple(value["timesteps"]), tuple(value["values"]))
        raise ConfigError(f"{where}: expected a number or {{timesteps, values}}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        seq = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp) or (Any, Any)
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}. Valid keys: {names}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain-python (YAML/JSON-ready) form of a config dataclass."""
    if isinstance(obj, Schedule):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` with the same strict conversion as loading."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    for k in changes:
        if k not in names:
            close = difflib.get_close_matches(k, list(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{type(obj).__name__}: unknown key '{k}'{hint}")
    conv = {k: _convert(hints[k], v, f"{type(obj).__name__}.{k}") for k, v in changes.items()}
    return dataclasses.replace(obj, **conv)  # type: ignore[type-var]


def load_yaml(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    return from_dict(cls, data, where=str(path))


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Stage configurations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderConfig:
    """Which descriptor model to run and where its weights come from."""

    name: Literal["oracle", "dinov2", "sd", "dino_sd", "geoaware"] = "oracle"  # encoder family
    dinov2_model: str = "facebook/dinov2-base"  # hub id or local folder (GeoAware: ViT-B/14)
    dinov2_layer: int = 11  # 0-based block whose output tokens are used (GeoAware: 11 = last of 12)
    dinov2_resolution: int = 840  # square input side in px (60 patches x 14)
    sd_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id or local folder
    sd_resolution: int = 960  # square input side in px (60 x 16)
    sd_timestep: int = 50  # noising timestep for the single UNet pass (GeoAware: 50)
    sd_window: int = 512  # [C] ODISE slide inference: crop side in px; 0 = one pass, whole input
    sd_captioner_checkpoint: str | None = None  # ODISE .pth holding its captioner; None: "" prompt
    sd_clip_model: str = "openai/clip-vit-large-patch14-336"  # CLIP tower of ODISE's captioner
    geoaware_checkpoint: str | None = None  # path to GeoAware-SC results_spair/best_856.PTH
    grid_size: int = 60  # descriptor grid side (h = w)
    batch_size: int = 4  # images per forward pass
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA
    seed: int = 42  # [C] seed of the diffusion noise (ODISE's shared noise uses 42)


@dataclass(frozen=True)
class DepthConfig:
    """Monocular relative depth (disparity) and its conversion to pseudo-depth (method.md §2.3)."""

    name: Literal["synthetic", "depth_anything"] = "synthetic"  # depth model
    model: str = "depth-anything/Depth-Anything-V2-Large-hf"  # hub id or local folder
    # [C] z = 1 - span * d / max(d): disparity -> pseudo-depth in [1 - span, 1]
    disparity_span: float = 0.3
    resolution: int = 518  # [C] DA-V2 input: shorter side scaled to this, sides multiples of 14
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"


@dataclass(frozen=True)
class MaskConfig:
    """Object masks: train masks for the prior, test masks for L_background (method.md §2.4)."""

    train_source: Literal["ground_truth", "sam_keypoints", "odise", "none"] = "ground_truth"
    test_source: Literal[
        "features", "ground_truth", "sam_box", "odise", "bbox", "none"
    ] = "features"  # [R] GT-free default: cells resembling the representation (align/foreground)
    sam_model: str = "facebook/sam-vit-huge"  # hub id or local folder
    erode_iterations: int = 2  # [C] keypoint snapping: 2x2 kernel, 2 iterations
    sam_multimask_index: int = 2  # [C] which of SAM's 3 masks a keypoint prompt keeps
    odise_dir: str = "Masks-ODISE"  # folder in the dataset root with ODISE <cat>/<name>.jpg
    odise_threshold: int = 127  # [C] GeoAware-SC binarises the ODISE JPEG masks at > 127
    device: str = "auto"  # where SAM runs: "auto" | "cpu" | "cuda" | "cuda:N"


@dataclass(frozen=True)
class PriorConfig:
    """Building the 3D object-class representation (method.md §2.5-2.10)."""

    use_flips: bool = True  # [C] mirrored train images with permuted keypoint ids
    min_visible_keypoints: int = 4  # images with fewer visible keypoints are skipped
    focal_init_inv: float = 0.2  # [C] initial 1/f (f in units of the longest image side)
    focal_lr: float = 1e-3  # [C] AdamW learning rate of the focal fit
    focal_steps: int = 1000  # [C] AdamW steps of the focal fit
    samples_per_image: int = 10  # [C] noisy copies per image for the Beta fit
    noise_rate: float = 0.2  # [C] noise std relative to the shortest visible keypoint edge
    beta_eps: float = 1e-3  # clamp of Beta inputs to [eps, 1 - eps]
    beta_newton_steps: int = 20  # Newton steps after the moment-matching start
    min_relation_samples: int = 40  # [C] a relation needs >= this many samples (4 imgs x 10)
    use_tets: bool = True  # [C] triangle+apex relations (maybe post-paper; method.md §5.2.7)
    placement_grid: int = 40  # [C uses 100] candidate grid per axis for greedy placement
    placement_max_relations: int = 100  # [C] relations per placed keypoint
    refine_steps: int = 2000  # [C uses 20000] joint AdamW refinement of the sparse cloud
    refine_lr: float = 1e-3  # [C]
    max_points_per_image: int = 1000  # [C] dense points kept per image after transfer
    max_mask_points: int = 10000  # [C] mask pixels back-projected per image
    inside_tolerance: float = 0.1  # [C] barycentric inside test tolerance
    n_clusters: int = 1000  # [C] k-means clusters of the dense cloud
    kmeans_iters: int = 30  # Lloyd iterations
    feature_neighbors: int = 1000  # [C] neighbours averaged into each cluster feature
    density_threshold: float = 0.0005  # [C] keep clusters holding more than this fraction
    dense_facing_weight: float = 0.0  # [R] >0: k-means also splits points by viewing side
    object_prototypes: int = 64  # [R] k-means prototypes of all object descriptors (masks)
    object_samples_per_image: int = 300  # [R] object cells per image fed to them
    seed: int = 0


@dataclass(frozen=True)
class AlignConfig:
    """Test-time alignment (method.md §2.11, supplementary Table 5 for the 'other' categories)."""

    lr: float = 5e-3  # [S5] AdamW learning rate
    n_steps: int = 1000  # [S5] AdamW steps
    lr_final: float = 1.0  # [R] cosine decay of lr to lr * lr_final at the last step (1 = constant)
    sigma_dense: Schedule = Schedule((0, 300, 500), (1.0, 0.1, 0.03))  # [S5] Eq. 5, dense
    sigma_sparse: Schedule = Schedule((0, 300, 500, 700), (1.0, 0.1, 0.1, 0.05))  # [S5] Eq. 5
    w_dense: Schedule = Schedule.constant(1.0)  # [S5] Eq. 9
    w_sparse: Schedule = Schedule((0, 500, 700, 1000), (0.0, 0.0, 10.0, 1.0))  # [S5] Eq. 9
    w_geom: Schedule = Schedule.constant(0.5)  # [S5] Eq. 13
    w_background: Schedule = Schedule((0, 300, 500, 700), (1.0, 10.0, 100.0, 10.0))  # [S5]
    w_depth: Schedule = Schedule.constant(10.0)  # [S5] Eq. 13
    sigma_sparse_inference: float | None = None  # [S5] Eq. 14 width; None: Table 5's (table5)
    # --- reconstructed choices (method.md §5.2); defaults chosen by measurement (bench/ablation.py)
    p_sem: Literal["calibrated", "gaussian"] = "calibrated"  # [R] semantic likelihood form
    sigma_sem: float = 0.3  # [R] width of the 'gaussian' p_sem in cosine-similarity units
    dense_likelihood: Literal["pixels", "points"] = "pixels"  # [R] sum over pixels or points
    sparse_likelihood: Literal["pixels", "points"] = "points"  # [R]
    sparse_cells: Literal["foreground", "dilated", "image"] = "image"  # [R] cells L_sparse uses
    sparse_dilation: int = 2  # [R] cells Omega grows by for sparse_cells 'dilated'
    log_eps: float = 1e-4  # [R] floor epsilon of log(p + eps) in Eqs. 6-8
    geom_tets: bool = True  # [R] include triangle+apex relations in L_geom
    depth_target: Literal["constant", "foreground"] = "constant"  # [R] z-bar of L_depth
    depth_target_value: float = 1.0  # [R] z-bar when depth_target == "constant"
    w_depth_order: float = 1.0  # [R] weight of the depth-ordering tie-breaker (needs depth maps)
    depth_order_form: Literal["correlation", "hinge"] = "correlation"  # [R] hinge: max(0, -corr)
    visibility_radius: float = 0.02  # [R] >0: soft z-buffer (normalised units); 0 = off
    facing_tau: float = 0.1  # [R] >0: dense points seen from behind explain less (0 = off)
    keypoint_facing: bool = True  # [R] facing_tau also hides keypoints seen from behind
    w_chirality: float = 1.0  # [R] weight of L_chiral, the mirror-twin breaker (align/chirality.py)
    chirality_min_cos: float = 0.3  # [R] |E[cos_z]| a triangle+apex relation needs for L_chiral
    chirality_tau: float = 0.05  # [R] softness of L_chiral's wrong-side penalty (cosine units)
    # starting poses ([R], method.md §5.2.6; measured in bench/ablation.py, book chapter 7)
    n_fitted_starts: int = 1  # [R] starts per image fitted to its evidence (align/fitted_starts.py)
    n_rotations: int = 0  # [R] uninformed cube-rotation starts (they need schedule_skip 0)
    mirror_hypotheses: bool = False  # [R] also try mirrored canonical clouds
    fit_candidates: int = 240  # [R] candidate rotations the fitted starts are chosen from
    fit_sigma: float = 0.05  # [R] spatial width (normalised) of the fitted starts' ICP and score
    fit_iterations: int = 5  # [R] ICP rounds per candidate
    fit_min_angle: float = 30.0  # [R] degrees between any two fitted starts of one image
    schedule_skip: float = 0.75  # [R] schedules start this far in (fitted starts: no coarse phase)
    prune_at: float = 0.0  # [R] fraction of the steps after which only prune_keep go on (0 = off)
    prune_keep: int = 4  # [R] hypotheses per image kept at prune_at (lowest energy)
    optimize_focal: bool = True  # [N] optimise f jointly with the keypoints
    focal_init_inv: float = 0.2  # [R] initial 1/f at test time
    weight_decay: float = 0.0  # [R] AdamW decay; >0 would pull keypoints towards the camera
    foreground_threshold: float = 0.5  # [R] soft-mask level whose cells form the pixel set Omega
    foreground_floor: float = 1.0  # [R] feature masks: p_sem >= this is sure foreground
    foreground_prototypes: bool = False  # [R] feature masks also use the object prototypes
    mask_blur: float = 2.0  # [R] Gaussian blur (cells) softening the mask for L_background
    background_floor: float = 0.5  # [R] L_background: mask >= this is object (for feature masks)
    cell_stride: int = 1  # average-pool the descriptor grid by this factor for alignment (CPU)
    max_dense_points: int = 0  # 0 = all; else a fixed-seed subsample of dense points (CPU)
    max_geom_relations: int = 0  # 0 = all; else a fixed-seed subsample per relation family (CPU)
    match_points: Literal["sparse", "dense"] = "sparse"  # [R] model points used by Eq. 14
    soft_argmax_window: int = 0  # [C] 0 = off; GeoAware uses 7
    soft_argmax_temperature: float = 0.02  # [C]
    partner_swap: bool = True  # [R] Eq. 14 may land on a keypoint's mirror partner (sparse only)
    partner_margin: float = 0.3  # [R] facing-cosine lead the partner needs (match.partner_redirect)
    compile: bool = False  # torch.compile the energy (GPU; ~1 min per batch shape)
    device: str = "auto"  # where images are aligned: auto (a GPU if present) | cpu | cuda | cuda:N
    images_per_batch: int = 0  # images aligned as one tensor program; 0 = 1 on CPU, 32 on a GPU
    seed: int = 0


#: AlignConfig fields that change only how fast an alignment runs
RUN_ONLY = ("compile", "device", "images_per_batch")
#: AlignConfig fields read only by the matching (Eq. 14), after the alignments
MATCHING_ONLY = ("sigma_sparse_inference", "match_points", "soft_argmax_window",
                 "soft_argmax_temperature", "partner_swap", "partner_margin")


@dataclass(frozen=True)
class EvalConfig:
    """PCK evaluation (method.md §3, §8)."""

    alphas: tuple[float, ...] = (0.1, 0.05, 0.01, 0.15)  # first alpha is the headline one
    comparison: Literal["<=", "<"] = "<="  # DIFT-style '<=' at original size; GeoAware uses '<'


@dataclass(frozen=True)
class Config:
    """Everything a run needs, loadable from one YAML file."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------------------------
# Table 5 per-category settings
# --------------------------------------------------------------------------------------------

#: supplementary Table 5: sigma_sparse_inference per category ("Chair, TV: 0.01; Airplane,
#: Bicycle, Bottle: 0.03; Other: 1.0"), with SPair-71k category names.
SIGMA_SPARSE_INFERENCE: dict[str, float] = {
    "chair": 0.01,
    "tvmonitor": 0.01,
    "aeroplane": 0.03,
    "bicycle": 0.03,
    "bottle": 0.03,
}


def table5(category: str, base: AlignConfig | None = None) -> AlignConfig:
    """Table 5 alignment settings for ``category`` over ``base`` (bottle has its own schedules).

    A field that ``base`` has changed from :class:`AlignConfig`'s default (in a config file or
    an ablation variant) keeps its value: Table 5 only fills in what was left at the default.
    ``sigma_sparse_inference`` defaults to unset, so any configured value is kept, 1.0 included.
    Bottle's three schedules are told apart from the defaults by value: a bottle run cannot ask
    for exactly the default ("Other") schedule of one of them, only for one that differs.
    """
    cfg = base or AlignConfig()
    default = AlignConfig()
    changes: dict[str, Any] = {
        "sigma_sparse_inference": SIGMA_SPARSE_INFERENCE.get(category, 1.0),
    }
    if category == "bottle":
        changes.update(
            sigma_sparse=Schedule((0, 300, 500, 700), (1.0, 0.3, 0.3, 0.05)),
            w_sparse=Schedule((0, 500, 700, 1000), (0.0, 0.0, 1.0, 10.0)),
            w_background=Schedule((0, 700, 900, 1000), (0.0, 0.0, 1.0, 20.0)),
        )
    kept = {k: v for k, v in changes.items() if getattr(cfg, k) == getattr(default, k)}
    return dataclasses.replace(cfg, **kept)


def scale_schedules(cfg: AlignConfig, n_steps: int) -> AlignConfig:
    """Stretch every schedule's timesteps from ``cfg.n_steps`` to ``n_steps`` (CPU-sized runs
    keep Table 5's shape with fewer steps)."""
    k = n_steps / cfg.n_steps
    changes: dict[str, Any] = {"n_steps": n_steps}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, Schedule) and len(v.timesteps) > 1:
            changes[f.name] = Schedule(tuple(t * k for t in v.timesteps), v.values)
    return dataclasses.replace(cfg, **changes)
