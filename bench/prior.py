"""Benchmark and acceptance figures of the representation build (issue 5). Prints, never asserts.

::

    # one synthetic category (semalign3d data synth --out DIR, or generate_dataset):
    python bench/prior.py synthetic --root DIR --category chair [--out rep.safetensors]
                                    [--figure rep.png] [--set n_clusters=300 ...]
    # real-size random inputs: 55 images + flips, 30 keypoints, 60x60x768 descriptors
    python bench/prior.py random [--images 55] [--keypoints 30] [--set refine_steps=2000 ...]
                                 [--device cuda] [--progress]

``random --device cuda`` runs the build with the views on the GPU and every tensor the build
creates without an explicit device put there too (``torch.set_default_device`` semantics), except
draws from the build's CPU ``torch.Generator``s, which are made on the CPU and then moved (the
library itself has no device option; its random draws use CPU generators). ``--progress`` shows
each stage's wall time as it ends.

``synthetic`` also reports the acceptance figures: the sparse cloud vs the true mean canonical
keypoints after a similarity alignment (RMS / RMS radius of the truth), focal lengths vs the
true ones, and our Beta fits vs ``scipy.stats.beta.fit(x, floc=0, fscale=1)``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils._device

from semalign3d.config import Config, PriorConfig, replace
from semalign3d.geometry import procrustes_align


def _overrides(cfg: PriorConfig, items: list[str]) -> PriorConfig:
    changes = {}
    for item in items:
        key, _, value = item.partition("=")
        changes[key] = json.loads(value) if value not in ("true", "false") else value == "true"
    return replace(cfg, **changes) if changes else cfg


def _timings(rep) -> None:
    t = {**rep.meta.get("load_timings_s", {}), **rep.meta["timings_s"]}
    for k, v in t.items():
        print(f"  {k:18s} {v:8.2f} s")
    print(f"  {'total':18s} {sum(t.values()):8.2f} s")


def _sparse_error(rep, truth: np.ndarray, label: str) -> None:
    c = torch.tensor(truth, dtype=torch.float64)[rep.keypoint_ids]
    size = float((c - c.mean(0)).norm(dim=-1).square().mean().sqrt())
    for refl in (False, True):
        _, rms = procrustes_align(rep.sparse_xyz.double(), c, allow_reflection=refl)
        print(f"  sparse vs {label:22s} reflection={refl!s:5s}: RMS / size = {rms / size:.4f}")


def _beta_vs_scipy(root: Path, category: str, n_rel: int = 200) -> None:
    from scipy import stats

    from semalign3d.prior.beta import fit_beta
    from semalign3d.prior.relations import edge_pair_features, edge_pair_index
    from semalign3d.prior.statistics import noisy_copies

    pts = []
    for f in sorted((root / "Synthetic" / category).glob("*.npz")):
        z = np.load(f)
        p = torch.tensor(z["keypoints_camera"], dtype=torch.float64)
        p[~torch.tensor(z["visible"])] = float("nan")
        pts.append(p)
    samples = noisy_copies(torch.stack(pts), 10, 0.2, torch.Generator().manual_seed(0))
    idx = edge_pair_index(samples.shape[1])
    pick = idx[torch.randperm(idx.shape[0], generator=torch.Generator().manual_seed(1))[:n_rel]]
    cos, ratio = edge_pair_features(samples, pick)
    ok = ~torch.isnan(cos)
    worst, used = 0.0, 0
    for x in ((cos + 1) / 2, ratio):
        a, b, n = fit_beta(x, ok, eps=1e-3)
        for r in range(x.shape[1]):
            if n[r] < 40:
                continue
            xs = x[ok[:, r], r].clamp(1e-3, 1 - 1e-3).numpy()
            sa, sb, _, _ = stats.beta.fit(xs, floc=0, fscale=1)
            worst = max(worst, abs(float(a[r]) - sa) / sa, abs(float(b[r]) - sb) / sb)
            used += 1
    print(f"  Beta fit vs scipy on {used} relation features: max rel. diff of a, b = {worst:.2e}")


class TrueDepth:
    """What-if depth model: the renderer's true depth (``Synthetic/`` sidecar) as a disparity
    whose pseudo-depth ``1 - 0.3 d / max d`` is the true depth up to scale."""

    name = "true-depth"

    def __init__(self, root: Path):
        self.root = root

    def disparity(self, images):
        out = []
        for im in images:
            z = torch.from_numpy(np.load(self.root / "Synthetic" / im.category / f"{im.name}.npz")
                                 ["depth"]).double()  # fmt: skip
            z = z.flip(-1) if im.flipped else z
            fg = z > 0
            zmin = z[fg].min()
            out.append(torch.where(fg, 1 - 0.7 * z / zmin, torch.zeros_like(z)).float())
        return out


def synthetic(args) -> None:
    from semalign3d.prior.build import build_from_dataset

    root = Path(args.root)
    config = Config()
    config = replace(config, prior=_overrides(config.prior, args.set))
    t0 = time.perf_counter()
    depth = TrueDepth(root) if args.true_depth else None
    rep = build_from_dataset(root, args.category, config, progress=args.progress, depth_model=depth)
    wall = time.perf_counter() - t0
    print(f"synthetic '{args.category}' ({root}), {torch.get_num_threads()} torch threads, "
          f"depth {rep.meta['depth_model']}, prior {config.prior}")  # fmt: skip
    print(
        f"  wall time {wall:.1f} s; images used {len(rep.meta['images_used'])}, skipped "
        f"{len(rep.meta['images_skipped'])}; relations {rep.meta['relations']}"
    )
    print(f"  dense points {rep.num_dense}; merged {rep.meta['dense_points_merged']}")
    _timings(rep)
    cls = json.loads((root / "Synthetic" / args.category / "class.json").read_text())
    _sparse_error(rep, np.array(cls["mean_keypoints"]), "true mean keypoints")
    _sparse_error(rep, np.array(cls["train_mean_keypoints"]), "train-set mean keypoints")
    rel = []
    for key, f in rep.meta["focal"].items():
        name = key.split("/", 1)[1].split(":")[0]
        true = float(np.load(root / "Synthetic" / args.category / f"{name}.npz")["focal"])
        rel.append(f / true - 1)
    rel_t = torch.tensor(rel)
    print(
        f"  focal / true - 1: median {rel_t.median():+.3f}, median |.| "
        f"{rel_t.abs().median():.3f}, range [{rel_t.min():+.3f}, {rel_t.max():+.3f}]"
    )
    _beta_vs_scipy(root, args.category)
    if args.out:
        print(f"  wrote {rep.save(args.out)}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        from semalign3d.prior.figures import plot_representation

        ax = plot_representation(rep, skeleton=True)
        ax.figure.savefig(args.figure, dpi=110)
        print(f"  figure {args.figure}")


def _random_views(n_images: int, k: int, channels: int, grid: int, seed: int):
    """Views of a random 3D keypoint shape under random cameras: ellipse masks around the
    keypoints, a depth map whose every pixel carries its nearest keypoint's true depth (so
    relations are consistent across images), random unit descriptors."""
    from semalign3d.data.records import AnnotatedImage
    from semalign3d.models.base import DescriptorMap, FeatureGrid
    from semalign3d.prior.build import View

    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(k, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.6, 0.5])
    views = []
    for i in range(n_images):
        h, w = 375, 500
        s = max(h, w)
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
        cam = shape @ (q * torch.linalg.det(q)).T + torch.tensor([0.0, 0.0, 6.0])
        f = 2.0
        uv = f * cam[:, :2] / cam[:, 2:] + torch.tensor([w / (2 * s), h / (2 * s)])
        xy = uv * s
        vis = (torch.rand(k, generator=g) < 0.7) & (xy[:, 0] > 2) & (xy[:, 0] < w - 3)
        vis &= (xy[:, 1] > 2) & (xy[:, 1] < h - 3)
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        pix = torch.stack([xx, yy], -1).reshape(-1, 2).double()
        c, r = xy.mean(0), (xy - xy.mean(0)).abs().max(0).values + 10
        mask = (((pix - c) / r).square().sum(-1) <= 2).reshape(h, w)
        near = torch.cdist(pix, xy).argmin(-1)
        z = cam[near, 2].reshape(h, w)
        zmin = z[mask].min()
        disp = torch.where(mask, 1 - 0.7 * z / zmin, torch.zeros_like(z)).float()
        kps = torch.where(vis[:, None], xy, torch.full_like(xy, float("nan"))).float()
        feats = torch.nn.functional.normalize(torch.randn(channels, grid, grid, generator=g), dim=0)
        rec = AnnotatedImage(f"rand{i:03d}", "random", Path("random.jpg"), w, h,
                             (0.0, 0.0, float(w), float(h)), kps, vis)  # fmt: skip
        views.append(View(rec, disp, mask, DescriptorMap(feats, FeatureGrid(h, w, grid, grid))))
        flip = AnnotatedImage(f"rand{i:03d}", "random", Path("random.jpg"), w, h,
                              (0.0, 0.0, float(w), float(h)), kps.clone(), vis.clone(),
                              flipped=True)  # fmt: skip
        # the mirrored copy is an independent view: mirror pixels and keypoints
        fk = flip.keypoints.clone()
        fk[:, 0] = (w - 1) - fk[:, 0]
        flip = dataclasses.replace(flip, keypoints=fk)
        fmap = DescriptorMap(feats.flip(-1), FeatureGrid(h, w, grid, grid))
        views.append(View(flip, disp.flip(-1), mask.flip(-1), fmap))
    return views


class _DefaultDevice(torch.utils._device.DeviceContext):
    """``torch.set_default_device(device)`` as a context, except that a factory call drawing from
    a CPU ``generator`` (``randperm``, ``randn``, ... with ``generator=g``) runs on the CPU and its
    result is moved to ``device``: the build seeds CPU generators, which CUDA factories reject."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if (
            gen is not None
            and gen.device.type == "cpu"
            and kwargs.get("device") is None
            and func in torch.utils._device._device_constructors()
        ):
            return func(*args, **{**kwargs, "device": "cpu"}).to(self.device)
        return super().__torch_function__(func, types, args, kwargs)


def _views_to(views, device: torch.device):
    from semalign3d.models.base import DescriptorMap

    out = []
    for v in views:
        r = dataclasses.replace(v.record, keypoints=v.record.keypoints.to(device),
                                visible=v.record.visible.to(device))  # fmt: skip
        d = DescriptorMap(v.descriptors.features.to(device), v.descriptors.grid)
        out.append(dataclasses.replace(v, record=r, disparity=v.disparity.to(device),
                                       mask=v.mask.to(device), descriptors=d))  # fmt: skip
    return out


def random_inputs(args) -> None:
    from semalign3d.prior.build import build_representation

    device = torch.device(args.device)
    cfg = _overrides(PriorConfig(), args.set)
    t0 = time.perf_counter()
    views = _random_views(args.images, args.keypoints, args.channels, args.grid, 0)
    print(
        f"random real-size inputs: {len(views)} views, {args.keypoints} keypoints, "
        f"{args.grid}x{args.grid}x{args.channels} descriptors "
        f"(made in {time.perf_counter() - t0:.1f} s), {torch.get_num_threads()} torch threads, "
        f"device {device}"
    )
    placement = contextlib.nullcontext()
    if device.type != "cpu":
        views = _views_to(views, device)
        placement = _DefaultDevice(device)
    t0 = time.perf_counter()
    with placement:
        rep = build_representation(views, cfg, "random", progress=args.progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(
        f"  wall time {time.perf_counter() - t0:.1f} s; relations {rep.meta['relations']}; "
        f"dense points {rep.num_dense}"
    )
    _timings(rep)
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    print(f"  config: {cfg}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--root", required=True)
    s.add_argument("--category", required=True)
    s.add_argument("--out")
    s.add_argument("--figure")
    s.add_argument("--progress", action="store_true")
    s.add_argument("--true-depth", action="store_true", help="what-if: the renderer's depth")
    s.add_argument("--set", nargs="*", default=[], help="PriorConfig overrides key=value")
    r = sub.add_parser("random")
    r.add_argument("--images", type=int, default=55)
    r.add_argument("--keypoints", type=int, default=30)
    r.add_argument("--channels", type=int, default=768)
    r.add_argument("--grid", type=int, default=60)
    r.add_argument("--progress", action="store_true", help="stages, bars, per-stage times")
    r.add_argument("--device", default="cpu", help="cpu or cuda (see above)")
    r.add_argument("--set", nargs="*", default=[], help="PriorConfig overrides key=value")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    synthetic(args) if args.mode == "synthetic" else random_inputs(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
