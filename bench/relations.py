"""Relation features on the grids against per-relation gathers (prints, never asserts).

Times forward + backward of :func:`edge_pair_features` and :func:`tet_features` for relation
sets of growing density, each evaluated both ways, and which way ``semalign3d.prior.relations``
chooses (``_EDGE_GRID_SHARE``, ``_TET_GRID_SHARE``: set them from these crossovers)::

    python bench/relations.py [--keypoints 25] [--batch 96] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from semalign3d.prior import relations as rel


def _time(fn, points: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward of ``fn(points)``."""
    times = []
    for _ in range(repeats + 1):  # the first run warms the allocator
        if points.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(points)
        torch.autograd.grad(sum(o.sum() for o in out), points)
        if points.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keypoints", type=int, default=25)
    ap.add_argument("--batch", type=int, default=96, help="keypoint clouds (images x hypotheses)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    k = args.keypoints
    g = torch.Generator().manual_seed(0)
    points = torch.randn(args.batch, k, 3, generator=g).to(args.device).requires_grad_(True)
    print(
        f"device={args.device} K={k} batch={args.batch}; grids from shares "
        f"{rel._EDGE_GRID_SHARE} (edges), {rel._TET_GRID_SHARE} (tets)"
    )
    print("family  relations  share of grid  gather ms  grid ms  chosen")
    families = [
        ("edges", rel.edge_pair_index(k), rel.EdgePairs, rel.edge_pair_features),
        ("tets", rel.tet_index(k), rel.Tets, rel.tet_features),
    ]
    for name, index, cls, features in families:
        for keep in (1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32, 0.01):
            n = max(1, int(keep * len(index)))
            sub = index[torch.randperm(len(index), generator=g)[:n]].to(args.device)
            ms = {}
            for grid in (False, True):
                f = cls.of(sub, grid=grid)
                run = lambda p, f=f, fn=features: _as_tuple(fn(p, f))  # noqa: E731
                ms[grid] = 1e3 * _time(run, points, args.repeats)
            chosen = cls.of(sub)
            cells = len(chosen.ends) ** 2 if name == "edges" else chosen.size**4
            print(
                f"{name:6s}  {n:9d}  {n / cells:13.4f}  {ms[False]:9.1f}  {ms[True]:7.1f}  "
                f"{'grid' if chosen.grid else 'gather'}"
            )


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


if __name__ == "__main__":
    main()
