"""Thin glue for the book's chapters 3-8: CPU-sized presets, cached representations, batched
alignment with a recorded trajectory, Eq. 14 keypoint transfer and a small pair evaluation.

Chapters orchestrate and plot; everything here calls the pipeline's own APIs
(``prior.build``, ``align.*``, ``match``, ``evaluate``). Where the pipeline offers a function
(``semalign3d.experiment.predict_pair`` for Eq. 14 and the baseline) it is used. What is added:
prior presets sized for a CPU, a representation cache keyed by dataset and configuration,
batched alignment of several images with a recorded parameter trajectory (the pipeline's
``align`` returns only the final state), reprojection errors against annotations, and an
overlay figure of an aligned model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from semalign3d.config import AlignConfig, Config, replace, scale_schedules, table5, to_dict
from semalign3d.data.records import AnnotatedImage, Pair
from semalign3d.models.base import DescriptorMap
from semalign3d.prior.representation import ClassRepresentation, RepresentationError

#: PriorConfig overrides per preset: ``paper`` = the code's settings, ``book`` = CPU-sized
#: (`make book`), ``tiny`` = CI-sized (seconds, quality irrelevant).
PRIOR_PRESETS: dict[str, dict] = {
    "paper": {},
    "book": {
        "focal_steps": 500, "placement_grid": 24, "refine_steps": 500, "n_clusters": 300,
        "feature_neighbors": 300, "max_mask_points": 3000, "max_points_per_image": 400,
        "kmeans_iters": 20,
    },
    "tiny": {
        "focal_steps": 100, "placement_grid": 12, "refine_steps": 100, "n_clusters": 60,
        "feature_neighbors": 60, "max_mask_points": 800, "max_points_per_image": 100,
        "kmeans_iters": 8, "min_relation_samples": 30,
    },
}


def is_synthetic(root: str | Path) -> bool:
    return (Path(root) / "synthetic.json").is_file()


def config_for(root: str | Path, encoder: str = "oracle", device: str = "auto",
               preset: str = "book") -> Config:
    """The full configuration a chapter uses: synthetic depth and GT train masks on synthetic
    data, Depth-Anything-V2 and SAM otherwise; the prior preset ``preset``."""
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"unknown prior preset '{preset}'; one of {sorted(PRIOR_PRESETS)}")
    cfg = Config()
    enc = replace(cfg.encoder, name=encoder, device=device)
    if is_synthetic(root):
        depth = replace(cfg.depth, name="synthetic")
        masks = replace(cfg.masks, train_source="ground_truth")
    else:
        depth = replace(cfg.depth, name="depth_anything", device=device)
        masks = replace(cfg.masks, train_source="sam_keypoints", device=device)
    prior = replace(cfg.prior, **PRIOR_PRESETS[preset])
    return replace(cfg, encoder=enc, depth=depth, masks=masks, prior=prior)


def _without_devices(d):
    """A config dict with every ``device`` entry dropped (it does not change the result)."""
    if isinstance(d, dict):
        return {k: _without_devices(v) for k, v in d.items() if k != "device"}
    return d


def _digest(root: Path, category: str, cfg: Config) -> str:
    meta = root / "synthetic.json"
    ident = {
        "root": str(root.resolve()),
        "dataset": meta.read_text() if meta.is_file() else "",
        "category": category,
        # only what the build reads (alignment and evaluation settings do not matter)
        "config": _without_devices({k: to_dict(getattr(cfg, k))
                                    for k in ("encoder", "depth", "masks", "prior")}),
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def representation(
    root: str | Path, category: str, cfg: Config, cache_dir: str | Path,
    progress: bool = False,
) -> tuple[ClassRepresentation, Path, bool]:
    """The representation of ``category`` built with ``cfg`` from ``root``, cached in
    ``cache_dir`` by a hash of dataset + config. Returns ``(rep, path, built_now)``."""
    from semalign3d.prior.build import build_from_dataset

    root = Path(root)
    path = Path(cache_dir) / f"{category}-{_digest(root, category, cfg)}.safetensors"
    if path.is_file():
        try:
            return ClassRepresentation.load(path), path, False
        except RepresentationError:
            path.unlink()
    rep = build_from_dataset(root, category, cfg, progress=progress)
    rep.save(path)
    return rep, path, True


def align_config(
    category: str, n_steps: int, n_rotations: int = 0, cell_stride: int = 1,
    max_dense_points: int = 0, max_geom_relations: int = 2000, **changes,
) -> AlignConfig:
    """Table 5 for ``category`` with every schedule stretched to ``n_steps`` (the shape of
    ``semalign3d.align.profiles``' ``cpu`` profile, with the sizes given); ``n_rotations > 0``
    replaces the default start fitted to each image by that many uninformed cube-rotation starts
    with the whole coarse-to-fine schedule (:func:`semalign3d.align.hypotheses.cube_starts`);
    then ``changes`` (schedules as numbers or ``{timesteps, values}`` in *scaled* steps)."""
    from semalign3d.align.hypotheses import cube_starts

    cfg = table5(category)
    if n_rotations > 0:
        cfg = cube_starts(cfg, n_rotations)
    cfg = scale_schedules(cfg, n_steps)
    return replace(cfg, cell_stride=cell_stride, max_dense_points=max_dense_points,
                   max_geom_relations=max_geom_relations, **changes)


def build_encoder(root: str | Path, encoder: str = "oracle", device: str = "auto", **knobs):
    """The chapter's encoder; ``knobs`` go to :class:`OracleEncoder` (e.g. ``symmetry``)."""
    if encoder == "oracle":
        from semalign3d.models.oracle import OracleEncoder

        return OracleEncoder(root, **knobs)
    from semalign3d.config import EncoderConfig
    from semalign3d.models import build_encoder as build

    return build(replace(EncoderConfig(), name=encoder, device=device), root)


# --------------------------------------------------------------------------- alignment


@dataclass
class Trajectory:
    """Parameters of every hypothesis every ``every`` steps: ``keypoints [S x I x H x K x 3]``,
    ``focal_inv [S x I x H]`` and the steps ``[S]``."""

    every: int
    steps: list[int] = field(default_factory=list)
    keypoints: list[torch.Tensor] = field(default_factory=list)
    focal_inv: list[torch.Tensor] = field(default_factory=list)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack(self.keypoints), torch.stack(self.focal_inv)

    def record(self, t: int, values: dict, keypoints: torch.Tensor, focal_inv: torch.Tensor):
        """``align``'s ``on_step`` hook: keep the parameters before every ``every``-th step."""
        if t % self.every == 0:
            self.steps.append(t)
            self.keypoints.append(keypoints.detach().clone())
            self.focal_inv.append(focal_inv.detach().clone())


def align_images(
    rep: ClassRepresentation,
    descriptors: Sequence[DescriptorMap],
    names: Sequence[str],
    cfg: AlignConfig,
    record_every: int = 0,
    masks: Sequence[torch.Tensor | None] | None = None,
    records: Sequence[AnnotatedImage] | None = None,
    config: Config | None = None,
    root: str | Path | None = None,
    per_image: bool = False,
):
    """Align ``rep`` to every image: all images in one batch, or with ``per_image`` one image
    at a time like ``semalign3d.experiment`` (on 2 CPU cores neither is consistently faster:
    the time per step depends strongly on the process's memory-allocator state). Returns
    ``(alignments, model, batches, trajectory or None)``; the trajectory stacks the images
    along its second axis.

    With ``records``, ``config`` and ``root`` the targets are built like the evaluation builds
    them (``semalign3d.experiment.build_targets``: the configured test-mask source, and
    pseudo-depth when the energy uses it); otherwise from ``masks`` (default: the GT-free
    ``features`` foreground)."""
    from semalign3d.align.model import prepare_model
    from semalign3d.align.optimize import align
    from semalign3d.align.target import make_target, stack_targets

    model = prepare_model(rep, cfg)
    if records is not None:
        from semalign3d.experiment import build_targets

        targets = build_targets(records, descriptors, model, cfg, config or Config(), root)
    else:
        masks = masks or [None] * len(names)
        targets = [make_target(n, d, model, cfg, mask=m)
                   for n, d, m in zip(names, descriptors, masks, strict=True)]
    groups = [[t] for t in targets] if per_image else [list(targets)]
    alignments, batches, trajs = [], [], []
    for group in groups:
        batch = stack_targets(group, model, cfg)
        traj = Trajectory(record_every) if record_every > 0 else None
        torch.manual_seed(cfg.seed)
        alignments += align(batch, model, cfg, on_step=traj.record if traj else None)
        batches.append(batch)
        trajs.append(traj)
    merged = None
    if record_every > 0:
        merged = Trajectory(record_every, list(trajs[0].steps))
        for k in range(len(merged.steps)):
            merged.keypoints.append(torch.cat([t.keypoints[k] for t in trajs]))
            merged.focal_inv.append(torch.cat([t.focal_inv[k] for t in trajs]))
    return alignments, model, batches, merged


def projected_dense(rep: ClassRepresentation, alignment) -> torch.Tensor:
    """``[N x 2]`` pixels of the dense cloud deformed by an alignment's keypoints."""
    dense = rep.deform_dense(alignment.keypoints[None].to(rep.dense_xyz))[0]
    return alignment.project(dense.double())


def reprojection_error(alignment, rep: ClassRepresentation, record: AnnotatedImage) -> float:
    """Median pixel distance, over visible GT keypoints, between projected model keypoints and
    the annotations, as a fraction of ``max(w, h)`` of the object box."""
    gt = record.keypoints[rep.keypoint_ids].double()
    err = (alignment.keypoints_2d.double() - gt).norm(dim=-1)
    err = err[~torch.isnan(err)]
    return float(err.median()) / record.bbox_size if err.numel() else float("nan")


def trajectory_errors(traj: Trajectory, image: int, hypothesis: int, rep: ClassRepresentation,
                      record: AnnotatedImage) -> torch.Tensor:
    """Reprojection error (fraction of the box) of one hypothesis at every recorded step."""
    from semalign3d.geometry import to_pixels

    kps, finv = traj.stacked()
    h, w = record.height, record.width
    s = float(max(h, w))
    pp = torch.tensor([w / (2 * s), h / (2 * s)], dtype=torch.float64)
    gt = record.keypoints[rep.keypoint_ids].double()
    out = []
    for k, fi in zip(kps[:, image, hypothesis].double(), finv[:, image, hypothesis].double(),
                     strict=True):
        uv = k[:, :2] / k[:, 2:3].clamp_min(1e-3) / fi.abs() + pp
        e = (to_pixels(uv, h, w) - gt).norm(dim=-1)
        e = e[~torch.isnan(e)]
        out.append(float(e.median()) / record.bbox_size)
    return torch.tensor(out)


# --------------------------------------------------------------------------- evaluation


def pick_pairs(pairs: Sequence[Pair], n_images: int) -> tuple[list[Pair], list[str]]:
    """The pairs among the ``n_images`` images that occur in most pairs (all if 0)."""
    counts: dict[str, int] = {}
    for p in pairs:
        for n in (p.source, p.target):
            counts[n] = counts.get(n, 0) + 1
    ranked = sorted(counts, key=lambda n: (-counts[n], n))
    keep = set(ranked if n_images <= 0 else ranked[:n_images])
    chosen = [p for p in pairs if p.source in keep and p.target in keep]
    used = sorted({n for p in chosen for n in (p.source, p.target)})
    return chosen, used


@dataclass
class PairRun:
    """Predictions of every method on the chosen pairs, and the alignments behind them."""

    pairs: list[Pair]
    images: dict[str, AnnotatedImage]
    descriptors: dict[str, DescriptorMap]
    alignments: dict[str, object]
    predictions: dict[str, dict[str, list]]  # method -> pair name -> [[x, y], ...]


def run_pairs(
    root: str | Path, category: str, rep: ClassRepresentation, encoder, cfg: AlignConfig,
    n_images: int, split: str = "test", config: Config | None = None,
) -> PairRun:
    """Align the test images of the chosen pairs once, then transfer every pair's source
    keypoints with the nearest-neighbour baseline and with Eq. 14."""
    from semalign3d.data.spair import SPairDataset

    ds = SPairDataset(root)
    pairs, names = pick_pairs(ds.pairs(split, category), n_images)
    images = {n: ds.image(category, n) for n in names}
    descs = dict(zip(names, encoder.encode([images[n] for n in names]), strict=True))
    als, _, _, _ = align_images(rep, [descs[n] for n in names], names, cfg,
                                records=[images[n] for n in names], config=config, root=root)
    alignments = dict(zip(names, als, strict=True))
    from semalign3d.experiment import predict_pair

    preds: dict[str, dict[str, list]] = {}
    for label, method in (("NN baseline", "nn"), ("SemAlign3D", "semalign3d")):
        preds[label] = {
            p.name: predict_pair(method, p, descs[p.source], descs[p.target], cfg, rep,
                                 alignments).double().tolist()
            for p in pairs
        }
    return PairRun(pairs, images, descs, alignments, preds)


# --------------------------------------------------------------------------- poses and figures


def project_points(points: torch.Tensor, focal: float, height: int, width: int) -> torch.Tensor:
    """Pixels ``[M x 2]`` of camera-frame points ``[M x 3]`` (normalised pinhole, §2.0)."""
    from semalign3d.geometry import principal_point, to_pixels

    pp = torch.tensor(principal_point(height, width), dtype=torch.float64)
    p = points.double()
    uv = focal * p[:, :2] / p[:, 2:3].clamp_min(1e-3) + pp
    return to_pixels(uv, height, width)


def true_pose(rep: ClassRepresentation, root: str | Path, record: AnnotatedImage,
              z_bar: float = 1.0) -> tuple[torch.Tensor, float]:
    """The representation posed like the object of a synthetic image: the sparse cloud mapped
    by the best similarity onto the true camera-frame keypoints, then scaled about the camera
    centre so that its mean depth is ``z_bar`` (the projection does not change). Returns
    ``(keypoints [K x 3], true focal)``."""
    import numpy as np

    from semalign3d.geometry import procrustes_align

    z = np.load(Path(root) / "Synthetic" / record.category / f"{record.name}.npz")
    truth = torch.tensor(z["keypoints_camera"], dtype=torch.float64)[rep.keypoint_ids]
    aligned, _ = procrustes_align(rep.sparse_xyz.double(), truth)
    aligned = aligned * (z_bar / float(aligned[:, 2].mean()))
    return aligned, float(z["focal"])


def show_model(ax, image, rep: ClassRepresentation, keypoints: torch.Tensor, focal: float,
               record: AnnotatedImage | None = None, title: str | None = None,
               dense_size: float = 4.0) -> None:
    """The image with the deformed dense cloud (PCA colours) and keypoints projected; GT
    keypoints of ``record`` as white rings joined to their model keypoint."""
    from semalign3d.book.plots import to_hwc
    from semalign3d.prior.figures import pca_colors

    img = to_hwc(image)
    h, w = img.shape[:2]
    dense = rep.deform_dense(keypoints[None].to(rep.dense_xyz))[0]
    pd_ = project_points(dense, focal, h, w).numpy()
    pk = project_points(keypoints, focal, h, w).numpy()
    ax.imshow(img)
    ax.scatter(pd_[:, 0], pd_[:, 1], s=dense_size, c=pca_colors(rep.dense_features).numpy(),
               alpha=0.8, linewidths=0)
    ax.scatter(pk[:, 0], pk[:, 1], s=22, c="k", marker="^", edgecolors="w", linewidths=0.6)
    if record is not None:
        import numpy as np

        gt = record.keypoints[rep.keypoint_ids].numpy()
        ok = ~np.isnan(gt[:, 0])
        ax.scatter(gt[ok, 0], gt[ok, 1], s=30, facecolors="none", edgecolors="w", linewidths=1.2)
        for a, b in zip(pk[ok], gt[ok], strict=True):
            ax.plot([a[0], b[0]], [a[1], b[1]], "w-", lw=0.7, alpha=0.8)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()
