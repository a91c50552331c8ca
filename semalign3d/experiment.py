"""End-to-end evaluation of one category: prior -> descriptors -> per-image alignment ->
pair matching (NN baseline and SemAlign3D's Eq. 14) -> PCK.

Run directory layout (every file written atomically; a rerun reuses whatever exists)::

    RUN/prior/<cat>.safetensors                  the class representation (built once)
    RUN/features/                                descriptor cache (FeatureCache)
    RUN/alignments/<cat>/<image>.json            one Alignment per test image
    RUN/alignments/<cat>.settings.json           the alignment settings that made them
    RUN/predictions/<method>/<cat>.json          pair name -> target keypoints (kps_ids order)

On the CPU every image is by default aligned on its own (``H`` hypotheses in one tensor program,
``align.images_per_batch`` 1) and on one thread, so its result never depends on the process: a
resumed run reproduces an uninterrupted one exactly. Cached alignments are reused only under the
settings recorded beside them; a run with other settings stops with an error instead of mixing
the two.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from semalign3d.align.hypotheses import Hypotheses
from semalign3d.align.model import AlignModel, prepare_model
from semalign3d.align.optimize import Alignment, align
from semalign3d.align.profiles import category_config
from semalign3d.align.target import AlignTarget, TargetBatch, make_target, stack_targets
from semalign3d.align.visibility import facing_cosine
from semalign3d.config import (
    MATCHING_ONLY,
    RUN_ONLY,
    AlignConfig,
    Config,
    scale_schedules,
    to_dict,
)
from semalign3d.data.flips import partner_positions
from semalign3d.data.records import AnnotatedImage, DataError, Pair
from semalign3d.data.spair import SPairDataset
from semalign3d.evaluate import (
    AlignmentScore,
    PairScore,
    score_alignment,
    score_predictions,
    summarize,
)
from semalign3d.io import write_json
from semalign3d.match import nn_match, partner_redirect, transfer
from semalign3d.models.base import DescriptorMap
from semalign3d.models.runtime import resolve_device
from semalign3d.prior.representation import ClassRepresentation, RepresentationError
from semalign3d.process import single_thread

METHODS = ("nn", "semalign3d")


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (see the module docstring)."""

    root: Path

    def prior(self, category: str) -> Path:
        return self.root / "prior" / f"{category}.safetensors"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def alignment(self, category: str, image: str) -> Path:
        return self.root / "alignments" / category / f"{image}.json"

    def predictions(self, method: str, category: str) -> Path:
        return self.root / "predictions" / method / f"{category}.json"

    def alignment_settings(self, category: str) -> Path:
        return self.root / "alignments" / f"{category}.settings.json"


def claim_alignments(run: RunDir, category: str, cfg: AlignConfig, config: Config) -> None:
    """Record the settings of ``run``'s alignments of ``category``, or check them.

    The record holds what decides an alignment: ``cfg`` (less the fields that change only the
    speed or only the matching, :data:`RUN_ONLY` and :data:`MATCHING_ONLY`), the encoder, the
    test-mask source and, when the energy reads depth, the depth model. The device, compilation
    and batch size are left out: they change the last bits only.

    Raises:
        ValueError: alignments of ``category`` made with other settings are cached there.
    """
    skip = set(RUN_ONLY) | set(MATCHING_ONLY)
    setting = json.loads(json.dumps({
        "align": {k: v for k, v in to_dict(cfg).items() if k not in skip},
        "encoder": to_dict(config.encoder),
        "test_masks": config.masks.test_source,
        "depth": to_dict(config.depth) if _needs_depth(cfg) else None,
    }))
    path = run.alignment_settings(category)
    folder = run.alignment(category, "x").parent
    cached = folder.is_dir() and any(folder.glob("*.json"))
    if not path.is_file() or not cached:
        if cached:
            warnings.warn(f"{folder}: alignments without a record of their settings (made before "
                          f"records were kept); assuming they match, recording them in {path}",
                          stacklevel=2)
        write_json(path, setting)
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: unreadable record of the settings of the alignments in "
                         f"{folder} ({e}); delete that folder to realign") from e
    if old != setting:
        was, now = _flat(old), _flat(setting)
        diff = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
        raise ValueError(
            f"{path}: the alignments in {folder} were made with other settings (differing: "
            f"{', '.join(diff)}); pass another --out, or delete {folder} to realign"
        )


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts -> ``{"a.b.c": leaf}``."""
    out: dict[str, object] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_or_build_prior(
    root: str | Path, category: str, config: Config, run: RunDir, progress: bool = True
) -> ClassRepresentation:
    """The run's representation of ``category``: loaded if present, else built from the
    dataset's ``trn`` images and saved."""
    path = run.prior(category)
    if path.is_file():
        try:
            return ClassRepresentation.load(path)
        except RepresentationError as e:
            if progress:
                print(f"[evaluate] rebuilding stale prior: {e}")
    from semalign3d.prior.build import build_from_dataset

    rep = build_from_dataset(root, category, config, cache_dir=run.features, progress=progress)
    rep.save(path)
    return rep


def encode(
    images: Sequence[AnnotatedImage],
    config: Config,
    root: str | Path,
    run: RunDir,
    progress: bool = True,
):
    """Descriptor maps of ``images`` through the run's feature cache."""
    from semalign3d.models import build_encoder
    from semalign3d.models.cache import FeatureCache

    encoder = build_encoder(config.encoder, root)
    return list(FeatureCache(run.features).encode(encoder, list(images), progress=progress))


def _needs_depth(cfg: AlignConfig) -> bool:
    return cfg.w_depth_order > 0 or cfg.depth_target == "foreground"


def build_targets(
    images: Sequence[AnnotatedImage],
    descriptors: Sequence[DescriptorMap],
    model: AlignModel,
    cfg: AlignConfig,
    config: Config,
    root: str | Path,
) -> list[AlignTarget]:
    """Alignment targets with the configured test-mask source and, when the energy needs it,
    pseudo-depth."""
    source = config.masks.test_source
    masks: list[torch.Tensor | None] = [None] * len(images)
    if source not in ("features", "none"):
        from semalign3d.models import build_masks

        masks = list(build_masks(config.masks, source, root).masks(list(images)))
    depths: list[torch.Tensor | None] = [None] * len(images)
    if _needs_depth(cfg):
        from semalign3d.models import build_depth
        from semalign3d.prior.lifting import pseudo_depth

        dm = build_depth(config.depth, root)
        depths = [
            pseudo_depth(d.float(), config.depth.disparity_span, im.key)
            for d, im in zip(dm.disparity(list(images)), images, strict=True)
        ]
    out = []
    for im, d, m, z in zip(images, descriptors, masks, depths, strict=True):
        box = (0.0, 0.0, float(im.width), float(im.height)) if source == "none" else None
        out.append(make_target(im.key, d, model, cfg, mask=m, box=box, depth=z))
    return out


def align_images(
    images: Sequence[AnnotatedImage],
    descriptors: Sequence[DescriptorMap],
    rep: ClassRepresentation,
    cfg: AlignConfig,
    config: Config,
    root: str | Path,
    run: RunDir,
    progress: bool = True,
    start: Callable[[AnnotatedImage, TargetBatch], Hypotheses] | None = None,
) -> dict[str, Alignment]:
    """Align every image (cached per image in the run directory), from ``start(image, batch)``
    when given (e.g. ``bench/oracle_start.py``'s true poses; one image at a time), else the
    configured starts.

    Images go through :func:`align` ``cfg.images_per_batch`` at a time on ``cfg.device``.
    Their energies separate, so a batch gives each image what it would get alone up to float
    rounding; on the CPU the default of one image per batch, on one thread, makes a resumed run
    equal an uninterrupted one bit for bit.
    """
    device = resolve_device(cfg.device)
    if cfg.images_per_batch < 0:
        raise ValueError(f"images_per_batch must be >= 0 (0 = auto), got {cfg.images_per_batch}")
    per_batch = 1 if start is not None else (
        cfg.images_per_batch or (1 if device.type == "cpu" else 32))
    claim_alignments(run, rep.category, cfg, config)
    model = prepare_model(rep, cfg)
    out: dict[str, Alignment] = {}
    todo = []
    for im, d in zip(images, descriptors, strict=True):
        path = run.alignment(rep.category, im.name)
        if path.is_file():
            try:
                out[im.name] = Alignment.from_dict(json.loads(path.read_text()))
                continue
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                pass  # a corrupt cache entry is recomputed
        todo.append((im, d))
    bar = tqdm(total=len(todo), desc=f"align {rep.category}", disable=not progress)
    for i in range(0, len(todo), per_batch):
        chunk = todo[i : i + per_batch]
        torch.manual_seed(cfg.seed)
        targets = build_targets([im for im, _ in chunk], [d for _, d in chunk], model, cfg,
                                config, root)
        with single_thread():
            batch = stack_targets([t.to(device) for t in targets], model, cfg)
            init = None if start is None else start(chunk[0][0], batch)
            fitted = align(batch, model, cfg, init)
        for (im, _), a in zip(chunk, fitted, strict=True):
            write_json(run.alignment(rep.category, im.name), a.to_dict())
            # reload so that a fresh result and a cached one are the same floats
            out[im.name] = Alignment.from_dict(json.loads(run.alignment(rep.category, im.name)
                                                          .read_text()))
        bar.update(len(chunk))
    bar.close()
    return out


def model_points(
    rep: ClassRepresentation, a: Alignment, kind: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projected model points of an alignment (pixels ``[M x 2]``) with their features
    ``[M x C]`` and similarity statistics ``[M]``: keypoints (``sparse``) or dense points."""
    if kind == "sparse":
        return (a.keypoints_2d, rep.sparse_features, rep.sparse_sim_mean, rep.sparse_sim_std)
    if kind == "dense":
        dense = rep.dense_from_sparse.double() @ a.keypoints
        return (a.project(dense), rep.dense_features, rep.dense_sim_mean, rep.dense_sim_std)
    raise ValueError(f"unknown match_points {kind!r}; expected 'sparse' or 'dense'")


def keypoint_facing_cosine(rep: ClassRepresentation, keypoints: torch.Tensor) -> torch.Tensor:
    """``[K]`` facing cosines (:func:`semalign3d.align.visibility.facing_cosine`) of camera-frame
    keypoints ``[K x 3]`` posed like the representation's, in float64."""
    kp = keypoints.double()
    return facing_cosine(kp, kp, rep.sparse_xyz.double(), rep.sparse_facing.double())


def target_landing(rep: ClassRepresentation, a: Alignment, cfg: AlignConfig) -> torch.Tensor:
    """``[K]`` long: the keypoint of alignment ``a`` on whose projection Eq. 14 lands for each
    model keypoint (:func:`semalign3d.match.partner_redirect`; the identity when
    ``cfg.partner_swap`` is off).

    Raises:
        ValueError: the swap is on but the representation has no keypoint facing vectors.
    """
    k = rep.sparse_xyz.shape[0]
    if not cfg.partner_swap:
        return torch.arange(k)
    if rep.sparse_facing.shape[0] != k:
        raise ValueError(f"align.partner_swap: the representation of '{rep.category}' has no "
                         "keypoint facing vectors; rebuild it with 'semalign3d prior build' or "
                         "set align.partner_swap: false")
    return partner_redirect(keypoint_facing_cosine(rep, a.keypoints),
                            partner_positions(rep.category, rep.keypoint_ids), cfg.partner_margin)


def transfer_pair(
    rep: ClassRepresentation,
    src: DescriptorMap,
    trg: DescriptorMap,
    src_alignment: Alignment,
    trg_alignment: Alignment,
    queries: torch.Tensor,
    cfg: AlignConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 14 between two aligned images through ``cfg.match_points``, landing on the target's
    mirror partners where ``cfg.partner_swap`` says so (keypoints only: dense points have no
    partners).

    Args:
        src, trg: the images' descriptor maps; queries: ``[Q x 2]`` source pixels.
    Returns:
        ``(pred [Q x 2] target pixels, point [Q] model point each query used, landed [Q] model
        point whose target projection each answer was read around)``.
    """
    if cfg.sigma_sparse_inference is None:
        raise ValueError("align.sigma_sparse_inference is unset: take the config through "
                         "semalign3d.config.table5(category, cfg) (Table 5's value) or set it")
    ps, feats, mean, std = model_points(rep, src_alignment, cfg.match_points)
    pt, *_ = model_points(rep, trg_alignment, cfg.match_points)
    landing = torch.arange(pt.shape[0])
    if cfg.match_points == "sparse":
        landing = target_landing(rep, trg_alignment, cfg)
    pred, used = transfer(src, trg, queries, ps, pt[landing], feats, mean, std,
                          cfg.sigma_sparse_inference, cfg.p_sem, cfg.sigma_sem,
                          cfg.soft_argmax_window, cfg.soft_argmax_temperature)
    return pred, used, landing[used]


def predict_pair(
    method: str,
    pair: Pair,
    src: DescriptorMap,
    trg: DescriptorMap,
    cfg: AlignConfig,
    rep: ClassRepresentation | None = None,
    alignments: dict[str, Alignment] | None = None,
) -> torch.Tensor:
    """Target keypoints ``[N x 2]`` (pixels) of one pair by ``method``."""
    if method == "nn":
        return nn_match(src, trg, pair.src_kps, cfg.soft_argmax_window,
                        cfg.soft_argmax_temperature)
    if method == "semalign3d":
        if rep is None or alignments is None:
            raise ValueError("semalign3d matching needs the representation and the alignments")
        return transfer_pair(rep, src, trg, alignments[pair.source], alignments[pair.target],
                             pair.src_kps, cfg)[0]
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def viewpoint_table(scores: Sequence[PairScore], alpha_index: int = 0) -> dict[str, float]:
    """Per-image PCK (percent) by SPair viewpoint_variation bucket."""
    buckets: dict[str, list[float]] = {}
    for s in scores:
        if s.correct.shape[1]:
            buckets.setdefault(str(s.viewpoint_variation), []).append(
                float(s.correct[alpha_index].double().mean()))
    return {k: 100.0 * sum(v) / len(v) for k, v in sorted(buckets.items())}


@dataclass(frozen=True)
class CategoryResult:
    """Predictions and PCK scores of each method for one category."""

    category: str
    predictions: dict[str, dict[str, list[list[float]]]]
    scores: dict[str, list[PairScore]]
    alignments: dict[str, Alignment]


def evaluate_category(
    root: str | Path,
    category: str,
    config: Config,
    run_dir: str | Path,
    methods: Sequence[str] = METHODS,
    profile: str = "cpu",
    split: str = "test",
    max_pairs: int | None = None,
    progress: bool = True,
    steps: int | None = None,
    align_config: AlignConfig | None = None,
) -> CategoryResult:
    """Run the whole pipeline on ``split`` of ``category`` and score every method
    (``steps`` overrides the profile's step count, schedules stretched to it; ``align_config``,
    when given, replaces the category's Table 5 settings under ``profile`` and ``steps``)."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; expected one of {METHODS}")
    run = RunDir(Path(run_dir))
    ds = SPairDataset(root)
    names = ds.pair_names(split, category)[:max_pairs]
    if not names:
        raise DataError(f"{root}: split '{split}' has no pairs of category '{category}'")
    pairs = [ds.pair(split, n) for n in names]
    image_names = list(dict.fromkeys(n for p in pairs for n in (p.source, p.target)))
    images = [ds.image(category, n) for n in image_names]
    cfg = align_config or category_config(category, config.align, profile)
    if steps and align_config is None:
        cfg = scale_schedules(cfg, steps)
    descriptors = dict(
        zip(image_names, encode(images, config, root, run, progress), strict=True)
    )
    rep = alignments = None
    if "semalign3d" in methods:
        rep = load_or_build_prior(root, category, config, run, progress)
        alignments = align_images(images, [descriptors[n] for n in image_names], rep, cfg,
                                  config, root, run, progress)
    predictions: dict[str, dict[str, list[list[float]]]] = {}
    scores: dict[str, list[PairScore]] = {}
    for m in methods:
        preds = {}
        for p in pairs:
            pred = predict_pair(m, p, descriptors[p.source], descriptors[p.target], cfg, rep,
                                alignments)
            preds[p.name] = pred.double().tolist()
        write_json(run.predictions(m, category), preds)
        predictions[m] = preds
        scores[m], _ = score_predictions(pairs, preds, config.eval.alphas, config.eval.comparison)
    return CategoryResult(category, predictions, scores, alignments or {})


def alignment_scores(
    root: str | Path,
    rep: ClassRepresentation,
    alignments: dict[str, Alignment],
    alpha: float = 0.1,
    comparison: str = "<=",
) -> list[AlignmentScore]:
    """Score every alignment's projected model keypoints against its image's annotation, and
    the left/right-swapped labelling too (how often the fit is the mirror twin)."""
    ds = SPairDataset(root)
    swap = partner_positions(rep.category, rep.keypoint_ids)
    out = []
    for name, a in alignments.items():
        im = ds.image(rep.category, name)
        out.append(score_alignment(name, a.keypoints_2d, im.keypoints[rep.keypoint_ids].double(),
                                   im.bbox_size, swap, alpha, comparison))
    return out


def summaries(results: Sequence[CategoryResult], config: Config) -> dict[str, dict]:
    """``{method: eval-pairs summary + "by_viewpoint"}`` over all categories of ``results``."""
    out = {}
    methods = list(dict.fromkeys(m for r in results for m in r.scores))
    for m in methods:
        scores = [s for r in results for s in r.scores.get(m, [])]
        summary = summarize(scores, config.eval.alphas)
        summary["by_viewpoint"] = viewpoint_table(scores)
        out[m] = summary
    return out
