"""Build a category's 3D object-class representation (method.md §2.5-2.10).

:func:`build_representation` works on in-memory views (keypoints, disparity, mask, descriptors)
so every stage can be tested on toy inputs; :func:`build_from_dataset` reads an SPair-layout root
and runs the encoder, depth and mask models through the registry and the feature cache.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from semalign3d.config import Config, PriorConfig, to_dict
from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.geometry import principal_point, similarity_fit, to_normalized
from semalign3d.models.base import DepthModel, DescriptorMap
from semalign3d.prior.dense import (
    build_dense,
    keypoint_features,
    object_prototypes,
    transfer_sample,
)
from semalign3d.prior.focal import fit_focal, lift_normalized
from semalign3d.prior.lifting import (
    LiftingError,
    lift_pixels,
    mask_pixels,
    pseudo_depth,
    read_depth,
    snap_to_mask,
)
from semalign3d.prior.representation import ClassRepresentation
from semalign3d.prior.sparse import place_greedy, refine
from semalign3d.prior.statistics import fit_relations, noisy_copies, used_keypoints
from semalign3d.process import single_thread


@dataclass(frozen=True)
class View:
    """One training image (or mirrored copy) with everything the build needs.

    Attributes:
        record: the annotation; keypoints ``[K x 2]`` pixels, NaN where invisible.
        disparity: ``[H x W]`` relative inverse depth.
        mask: ``[H x W]`` bool object mask.
        descriptors: the image's unit descriptor map.
    """

    record: AnnotatedImage
    disparity: torch.Tensor
    mask: torch.Tensor
    descriptors: DescriptorMap


@contextmanager
def _stage(timings: dict[str, float], name: str, progress: bool):
    t0 = time.perf_counter()
    if progress:
        print(f"[prior] {name} ...", flush=True)
    yield
    timings[name] = round(time.perf_counter() - t0, 3)
    if progress:  # as each stage ends, so a killed build still shows where the time went
        print(f"[prior] {name} done in {timings[name]:.2f} s", flush=True)


def _check_view(v: View, min_visible: int, span: float, erode_iters: int):
    """Pseudo-depth and snapped keypoints of a view, or a reason to skip it."""
    r = v.record
    n_vis = int(r.visible.sum())
    if n_vis < min_visible:
        return f"{n_vis} visible keypoints (< {min_visible})"
    shape = (r.height, r.width)
    for what, t in (("disparity", v.disparity), ("mask", v.mask)):
        if tuple(t.shape) != shape:
            return f"{what} is {tuple(t.shape)}, image is {shape}"
    try:
        z = pseudo_depth(v.disparity.float(), span, r.key)
        snapped = snap_to_mask(r.keypoints.float(), v.mask.bool(), erode_iters, r.key)
    except LiftingError as e:
        return str(e)
    return z, snapped


def _degeneracy(points: torch.Tensor) -> str | None:
    """Why the visible keypoints ``[K x 3]`` cannot span tetrahedra, or None."""
    p = points[torch.isfinite(points).all(-1)]
    if p.shape[0] < 4:
        return f"only {p.shape[0]} keypoints have finite 3D positions"
    c = p - p.mean(0)
    sv = torch.linalg.svdvals(c.double())
    if sv[0] <= 1e-12:
        return "all visible keypoints coincide"
    if sv.shape[0] < 3 or sv[2] / sv[0] < 1e-6:
        return "visible keypoints are coplanar (no tetrahedron has volume)"
    return None


def build_representation(
    views: Sequence[View],
    cfg: PriorConfig,
    category: str,
    disparity_span: float = 0.3,
    erode_iterations: int = 2,
    progress: bool = False,
    meta: dict | None = None,
) -> ClassRepresentation:
    """Build the representation from in-memory views (method.md §2.5-2.10).

    Args:
        views: training images, mirrored copies included as independent views (a view and its
            mirror are recognised by ``record.name`` and get their ``1/f`` averaged).
        cfg: prior settings.
        category: category name.
        disparity_span: ``span`` of ``z = 1 - span * d / max d``.
        erode_iterations: mask erosion before keypoint snapping.
        progress: print stages and show tqdm bars.
        meta: extra provenance merged into the result's ``meta``.
    Returns:
        the validated :class:`ClassRepresentation`.
    Raises:
        DataError: fewer usable images than the relation filter needs, or no valid relation.
    """
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    warned: dict[str, str] = {}
    g = torch.Generator().manual_seed(cfg.seed)
    usable: list[tuple[View, torch.Tensor, torch.Tensor]] = []
    with _stage(timings, "lifting", progress):
        for v in views:
            out = _check_view(v, cfg.min_visible_keypoints, disparity_span, erode_iterations)
            if isinstance(out, str):
                skipped[v.record.key] = out
                if "visible keypoints" not in out:
                    warnings.warn(f"{category}: skipping {v.record.key}: {out}", stacklevel=2)
                continue
            usable.append((v, *out))
        need = max(2, math.ceil(cfg.min_relation_samples / cfg.samples_per_image))
        if len(usable) < need:
            raise DataError(
                f"{category}: only {len(usable)} usable training images (need >= {need} for "
                f"relations with >= {cfg.min_relation_samples} samples); skipped: {skipped}"
            )
        recs = [v.record for v, _, _ in usable]
        uv = torch.stack([to_normalized(r.keypoints.float(), r.height, r.width) for r in recs])
        vis = torch.stack([r.visible for r in recs])
        zk = torch.stack([read_depth(z, s) for _, z, s in usable])
        pp = torch.tensor([principal_point(r.height, r.width) for r in recs])
        index = {(r.name, r.flipped): i for i, r in enumerate(recs)}
        pairs = [
            (i, index[(r.name, True)])
            for i, r in enumerate(recs)
            if not r.flipped and (r.name, True) in index
        ]
        flip_pairs = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)

    with _stage(timings, "focal", progress):
        focal, focal_info = fit_focal(
            uv.double(),
            zk.double(),
            pp.double(),
            vis,
            cfg.focal_init_inv,
            cfg.focal_lr,
            cfg.focal_steps,
            flip_pairs,
            progress,
        )
        if not torch.isfinite(focal).all():
            bad = [r.key for r, f in zip(recs, focal, strict=True) if not torch.isfinite(f)]
            raise DataError(f"{category}: the focal fit diverged for {bad}")
        kp3d = lift_normalized(uv.double(), zk.double(), pp.double(), 1 / focal)
        kp3d = torch.where(vis[..., None], kp3d, torch.full_like(kp3d, float("nan")))
        for r, p in zip(recs, kp3d, strict=True):
            why = _degeneracy(p)
            if why:
                warned[r.key] = why
                warnings.warn(f"{category}: {r.key}: {why}", stacklevel=2)

    with _stage(timings, "statistics", progress):
        used = used_keypoints(kp3d)
        kpu = kp3d[:, used]
        samples = noisy_copies(kpu, cfg.samples_per_image, cfg.noise_rate, g)
        prior, counts = fit_relations(
            samples, cfg.use_tets, cfg.beta_eps, cfg.beta_newton_steps, cfg.min_relation_samples
        )
        if prior.num_edges == 0:
            raise DataError(
                f"{category}: no keypoint relation passed the Beta filter "
                f"({counts.edges_total} edge pairs fitted from {len(usable)} images)"
            )

    with _stage(timings, "sparse.placement", progress):
        k = int(used.numel())
        placed, order = place_greedy(prior, k, cfg.placement_grid, cfg.placement_max_relations)
    with _stage(timings, "sparse.refine", progress):
        sparse, refine_info = refine(placed, prior, cfg.refine_steps, cfg.refine_lr, progress)

    with _stage(timings, "features", progress):
        kfeat = torch.stack(
            [
                v.descriptors.grid.sample(
                    v.descriptors.features.float(), r.keypoints.float().nan_to_num()
                )
                for (v, _, _), r in zip(usable, recs, strict=True)
            ]
        )
        phi, phi_mean, phi_std = keypoint_features(kfeat[:, used], vis[:, used])
        # from which side the cameras saw each keypoint, in the canonical frame (as for the
        # dense points below): a keypoint seen from behind is hidden even without an occluder
        # the rotation of each image's skeleton onto the canonical one (reused for dense points)
        rots = [similarity_fit(kpu[b], sparse.to(kpu.dtype))[1] for b in range(kpu.shape[0])]
        kdirs = torch.stack([F.normalize(-kpu[b], dim=-1) @ rot.T for b, rot in enumerate(rots)])
        # kdirs: [B x K x 3], NaN where invisible
        seen = ~torch.isnan(kdirs).any(-1)
        sparse_facing = kdirs.nan_to_num().sum(0) / seen.sum(0).clamp_min(1)[:, None]

    with _stage(timings, "dense.transfer", progress):
        pts, feats, dirs, per_image, obj = [], [], [], {}, []
        g_obj = torch.Generator().manual_seed(cfg.seed + 1)
        it = list(enumerate(usable))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="transfer", leave=False)
        for b, (v, z, _) in it:
            r = v.record
            pix = mask_pixels(v.mask.bool(), cfg.max_mask_points, g)
            xyz = lift_pixels(
                pix.double(), read_depth(z, pix).double(), focal[b], r.height, r.width
            )
            moved, keep = transfer_sample(
                xyz, kpu[b], sparse, cfg.max_points_per_image, cfg.inside_tolerance, g
            )
            per_image[r.key] = int(keep.numel())
            if cfg.object_prototypes > 0:
                # own generator: the dense cloud's draws stay those of a build without them
                pick = torch.randperm(pix.shape[0], generator=g_obj)
                pick = pick[: cfg.object_samples_per_image]
                obj.append(v.descriptors.grid.sample(v.descriptors.features.float(), pix[pick]))
            if keep.numel():
                pts.append(moved)
                feats.append(v.descriptors.grid.sample(v.descriptors.features.float(), pix[keep]))
                # towards the camera (the origin), turned into the canonical frame
                dirs.append(F.normalize(-xyz[keep], dim=-1) @ rots[b].T)
        if not pts:
            warnings.warn(
                f"{category}: no mask point fell inside any keypoint tetrahedron; the dense "
                "cloud holds only the keypoints",
                stacklevel=2,
            )
            pts, feats, dirs = [sparse], [phi], [torch.zeros_like(sparse)]

    with _stage(timings, "dense.cluster", progress):
        dense = build_dense(
            torch.cat(pts),
            torch.cat(feats),
            sparse,
            cfg.n_clusters,
            cfg.kmeans_iters,
            cfg.feature_neighbors,
            cfg.density_threshold,
            cfg.inside_tolerance,
            cfg.seed,
            torch.cat(dirs),
            cfg.dense_facing_weight,
        )

    with _stage(timings, "object prototypes", progress):
        obj_feats = torch.cat(obj) if obj else phi.new_zeros(0, phi.shape[-1])
        if obj_feats.shape[0] > 0:
            proto, proto_mean, proto_std = object_prototypes(
                obj_feats, cfg.object_prototypes, cfg.kmeans_iters, cfg.seed
            )
        else:
            proto, proto_mean, proto_std = phi[:0], phi_mean[:0], phi_std[:0]

    info = {
        "config": to_dict(cfg),
        "disparity_span": disparity_span,
        "images_used": [r.key for r in recs],
        "images_skipped": skipped,
        "images_degenerate": warned,
        "dense_points_per_image": per_image,
        "focal": {r.key: round(float(f), 5) for r, f in zip(recs, focal, strict=True)},
        "focal_fit": focal_info,
        "relations": {
            "edges_total": counts.edges_total,
            "edges_kept": counts.edges_kept,
            "tets_total": counts.tets_total,
            "tets_kept": counts.tets_kept,
        },
        "placement_order": [int(used[i]) for i in order],
        "refine": refine_info,
        "dense_points_merged": int(sum(p.shape[0] for p in pts)),
        "timings_s": timings,
        **(meta or {}),
    }
    f32 = torch.float32
    rep = ClassRepresentation(
        category=category,
        keypoint_ids=used.clone(),
        sparse_xyz=sparse.to(f32),
        sparse_features=phi.to(f32),
        sparse_sim_mean=phi_mean.to(f32),
        sparse_sim_std=phi_std.to(f32),
        dense_xyz=dense.xyz.to(f32),
        dense_features=dense.features.to(f32),
        dense_sim_mean=dense.sim_mean.to(f32),
        dense_sim_std=dense.sim_std.to(f32),
        dense_weight=dense.weight.to(f32),
        dense_from_sparse=dense.dense_from_sparse.to(f32),
        dense_facing=dense.facing.to(f32),
        prior=prior.to(dtype=f32),
        sparse_facing=sparse_facing.to(f32),
        object_features=proto.to(f32),
        object_sim_mean=proto_mean.to(f32),
        object_sim_std=proto_std.to(f32),
        meta=info,
    )
    rep.validate(f"representation of '{category}'")
    return rep


def train_views_records(root: str | Path, category: str, cfg: PriorConfig):
    """Training records of ``category`` (mirrored copies appended when ``cfg.use_flips``) and
    the ones skipped for too few visible keypoints: ``(records, {key: reason})``."""
    from semalign3d.data.flips import flip_image
    from semalign3d.data.spair import SPairDataset

    ds = SPairDataset(root)
    names = ds.train_image_names(category)
    if not names:
        raise DataError(f"{root}: category '{category}' has no 'trn' pairs")
    records = [ds.image(category, n) for n in names]
    if cfg.use_flips:
        records += [flip_image(r) for r in records]
    kept, skipped = [], {}
    for r in records:
        n = int(r.visible.sum())
        if n < cfg.min_visible_keypoints:
            skipped[r.key] = f"{n} visible keypoints (< {cfg.min_visible_keypoints})"
        else:
            kept.append(r)
    return kept, skipped


def build_from_dataset(
    root: str | Path,
    category: str,
    config: Config,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    depth_model: DepthModel | None = None,
) -> ClassRepresentation:
    """Build the representation of ``category`` from the train images of an SPair-layout root.

    Runs the configured encoder (through :class:`~semalign3d.models.cache.FeatureCache` when
    ``cache_dir`` is given), depth model and train-mask source via the model registry; with
    ``ground_truth`` masks an image without a ``Segmentation/`` PNG is skipped and counted.

    Args:
        root: dataset root; category: category name; config: the full configuration.
        cache_dir: descriptor cache folder (None: no cache).
        progress: print stages and progress bars.
        depth_model: use this depth model instead of the configured one (what-if studies).
    Returns:
        the validated representation; ``meta`` records the dataset root, the images used and
        skipped (with reasons), the model names and per-stage timings.
    """
    from semalign3d.data.spair import load_mask
    from semalign3d.models import build_depth, build_encoder, build_masks

    cfg = config.prior
    timings: dict[str, float] = {}
    with _stage(timings, "load", progress):
        records, skipped = train_views_records(root, category, cfg)
    masks: list[torch.Tensor | None]
    with _stage(timings, "masks", progress):
        source = config.masks.train_source
        if source == "ground_truth":
            masks = [load_mask(r) for r in records]
        else:
            masks = list(build_masks(config.masks, source, root).masks(records))
        for r, m in zip(records, masks, strict=True):
            if m is None:
                skipped[r.key] = f"no object mask (Segmentation/{category}/{r.name}.png)"
        pairs = [(r, m) for r, m in zip(records, masks, strict=True) if m is not None]
        records = [r for r, _ in pairs]
    with _stage(timings, "depth", progress):
        depth = depth_model or build_depth(config.depth, root)
        disparity = list(depth.disparity(records))
    with _stage(timings, "descriptors", progress):
        encoder = build_encoder(config.encoder, root)
        if cache_dir is not None:
            from semalign3d.models.cache import FeatureCache

            descriptors = list(FeatureCache(cache_dir).encode(encoder, records, progress=progress))
        else:
            descriptors = list(encoder.encode(records))
    views = [View(r, d, m, f) for (r, m), d, f in zip(pairs, disparity, descriptors, strict=True)]
    with single_thread():  # the same prior on any machine (see semalign3d.process)
        rep = build_representation(
            views,
            cfg,
            category,
            disparity_span=config.depth.disparity_span,
            erode_iterations=config.masks.erode_iterations,
            progress=progress,
            meta={
                "dataset_root": str(Path(root).resolve()),
                "full_config": to_dict(config),
                "encoder": getattr(encoder, "name", type(encoder).__name__),
                "depth_model": getattr(depth, "name", type(depth).__name__),
                "mask_source": config.masks.train_source,
                "load_timings_s": timings,
            },
        )
    rep.meta["images_skipped"] = {**skipped, **rep.meta["images_skipped"]}
    return rep
