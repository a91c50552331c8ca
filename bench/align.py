"""Alignment throughput: alignments (image x hypotheses runs) per second at realistic size.

Random but well-formed inputs of the paper's size by default: 25 keypoints, ~800 dense points,
a 60 x 60 grid with ~50 % foreground cells, 768-d descriptors, 24 rotation hypotheses, 1000 steps.
Prints one line per setting; never asserts anything.

    python bench/align.py --device cpu --steps 20 --batch 1 4
    python bench/align.py --device cuda --batch 1 16 64 --compile

The warm-up is by default an identical run (same steps, same shapes), so compilation stays out of
the timed run. With ``--compile`` dynamo is reset before each batch size, so each is timed with
graphs specialised to its shapes (as the figures in bench/RESULTS.md were); the number of graphs
compiled during the timed run is printed (should be 0).
"""

from __future__ import annotations

import argparse
import time

import torch

from semalign3d.align.hypotheses import cube_starts
from semalign3d.align.model import AlignModel
from semalign3d.align.optimize import align
from semalign3d.align.target import AlignTarget, stack_targets
from semalign3d.config import AlignConfig, replace, scale_schedules
from semalign3d.models.base import FeatureGrid
from semalign3d.prior.relations import edge_pair_index, tet_index
from semalign3d.prior.shape_prior import ShapePrior


def random_model(k: int, n: int, c: int, relations: int, seed: int = 0) -> AlignModel:
    g = torch.Generator().manual_seed(seed)
    f = torch.nn.functional.normalize
    w = torch.rand(n, k, generator=g) ** 8
    w = w / w.sum(-1, keepdim=True)
    e = edge_pair_index(k)
    t = tet_index(k)
    e = e[torch.randperm(len(e), generator=g)[:relations]] if relations else e
    t = t[torch.randperm(len(t), generator=g)[:relations]] if relations else t
    prior = ShapePrior(e, 2 + torch.rand(len(e), 2, generator=g),
                       2 + torch.rand(len(e), 2, generator=g), t,
                       2 + torch.rand(len(t), 3, 2, generator=g))
    return AlignModel(
        sparse_xyz=torch.randn(k, 3, generator=g) * 0.05,
        sparse_features=f(torch.randn(k, c, generator=g), dim=-1),
        sparse_sim_mean=torch.full((k,), 0.6), sparse_sim_std=torch.full((k,), 0.1),
        dense_features=f(torch.randn(n, c, generator=g), dim=-1),
        dense_sim_mean=torch.full((n,), 0.6), dense_sim_std=torch.full((n,), 0.1),
        dense_from_sparse=w, prior=prior, dense_index=torch.arange(n),
        dense_facing=0.7 * f(torch.randn(n, 3, generator=g), dim=-1),
        chiral_index=t[: max(1, len(t) // 10)], chiral_sign=torch.ones(max(1, len(t) // 10)),
    )


def random_target(name: str, grid: int, c: int, seed: int) -> AlignTarget:
    g = torch.Generator().manual_seed(seed)
    fg = FeatureGrid(480, 640, grid, grid)
    feats = torch.nn.functional.normalize(torch.randn(grid, grid, c, generator=g), dim=-1)
    mask = torch.zeros(grid, grid)
    mask[grid // 4 : 3 * grid // 4, grid // 6 : 5 * grid // 6] = 1  # ~1/3 of the square
    return AlignTarget(name, fg, feats, mask * fg.valid_cells())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="images per batch")
    p.add_argument("--hypotheses", type=int, default=24)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--keypoints", type=int, default=25)
    p.add_argument("--dense", type=int, default=800)
    p.add_argument("--grid", type=int, default=60)
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--relations", type=int, default=0, help="per family; 0 = all")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after timing, profile this many steps and print the top kernels")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="steps of the untimed warm-up run (0 = same as --steps)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    # the hot loop's cost per hypothesis does not depend on how the starts were chosen
    cfg = replace(scale_schedules(cube_starts(AlignConfig(), a.hypotheses), a.steps),
                  compile=a.compile)
    model = random_model(a.keypoints, a.dense, a.channels, a.relations).to(dev)
    print(f"device={dev} threads={torch.get_num_threads()} K={a.keypoints} N={a.dense} "
          f"grid={a.grid}x{a.grid} C={a.channels} H={a.hypotheses} steps={a.steps} "
          f"edges={model.prior.num_edges} tets={model.prior.num_tets} compile={a.compile}")
    for b in a.batch:
        try:
            _run(b, a, cfg, model, dev)
        except torch.OutOfMemoryError as e:  # the next (smaller) batch still gets measured
            print(f"batch {b:3d} images x {a.hypotheses} hyps: out of memory ({str(e)[:120]})")
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def _run(b: int, a: argparse.Namespace, cfg: AlignConfig, model: AlignModel,
         dev: torch.device) -> None:
    """Time one batch of ``b`` images and print its line."""
    if a.compile:
        torch._dynamo.reset()
    targets = [random_target(f"img{i}", a.grid, a.channels, i) for i in range(b)]
    targets = [AlignTarget(t.name, t.grid, t.features.to(dev), t.foreground.to(dev))
               for t in targets]
    t0 = time.perf_counter()
    batch = stack_targets(targets, model, cfg)
    t_pre = time.perf_counter() - t0
    warm = replace(cfg, n_steps=a.warmup_steps) if a.warmup_steps else cfg
    g0 = _graphs()
    t0 = time.perf_counter()
    align(batch, model, warm)  # warm-up (and compilation)
    _sync(dev)
    t_warm = time.perf_counter() - t0
    g1 = _graphs()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    align(batch, model, cfg)
    _sync(dev)
    dt = time.perf_counter() - t0
    g2 = _graphs()
    runs = b * a.hypotheses
    per_1000 = dt / a.steps * 1000
    print(f"batch {b:3d} images x {a.hypotheses} hyps: {dt:.2f} s for {a.steps} steps "
          f"(precompute {t_pre:.2f} s) -> {per_1000 / b:.2f} s per image, "
          f"{per_1000 / runs * 1000:.1f} ms per image-hypothesis alignment at 1000 steps, "
          f"{runs / per_1000:.2f} alignments/s")
    extra = ""
    if a.compile:
        extra += (f"; dynamo graphs compiled: warm-up {g1 - g0}, timed run {g2 - g1}"
                  f"{' (RECOMPILED: timing includes compilation)' if g2 > g1 else ''}")
    if dev.type == "cuda":
        extra += f"; peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
    print(f"          warm-up {warm.n_steps} steps {t_warm:.2f} s{extra}")
    if a.profile:
        _profile(batch, model, replace(cfg, n_steps=a.profile), dev)


def _profile(batch, model, cfg, dev: torch.device) -> None:
    """Top operators by device (or CPU) self time over ``cfg.n_steps`` steps."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        align(batch, model, cfg)
        _sync(dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=48))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _graphs() -> int:
    """Graphs compiled by dynamo so far in this process."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


if __name__ == "__main__":
    main()
