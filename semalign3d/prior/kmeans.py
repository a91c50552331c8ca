"""k-means in torch (replaces cuML in the authors' code): k-means++ or random seeding with a
fixed seed, Lloyd iterations, distances computed in row chunks."""

from __future__ import annotations

from typing import Literal

import torch


def nearest_centre(
    x: torch.Tensor, centres: torch.Tensor, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``[N]`` and squared distance ``[N]`` of each row of ``x [N x D]``'s nearest centre
    ``[k x D]``."""
    idx, dist = [], []
    c2 = centres.square().sum(-1)
    for s in range(0, x.shape[0], chunk):
        xs = x[s : s + chunk]
        # |x|^2 - 2 x.c + |c|^2 as one matrix product: much faster than cdist for small D
        d = torch.addmm(c2[None], xs, centres.T, alpha=-2).add_(xs.square().sum(-1, keepdim=True))
        v, i = d.min(-1)
        v = v.clamp_min(0)
        idx.append(i)
        dist.append(v)
    return torch.cat(idx), torch.cat(dist)


def kmeans_pp_init(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``[N x D]`` -> ``[k x D]``."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    d2 = (x - x[first]).square().sum(-1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: repeat points
            nxt = int(torch.randint(n, (1,), generator=generator))
        else:
            nxt = int(torch.multinomial((d2 / total).cpu(), 1, generator=generator))
        centres.append(x[nxt])
        d2 = torch.minimum(d2, (x - x[nxt]).square().sum(-1))
    return torch.stack(centres)


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 30,
    seed: int = 0,
    init: Literal["k-means++", "random"] = "k-means++",
    chunk: int = 8192,
    init_sample: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means.

    Args:
        x: ``[N x D]`` points (N >= 1).
        k: number of clusters (clipped to N).
        iters: maximum Lloyd iterations (stops early when assignments no longer change).
        seed: seed of the initialisation.
        init: ``"k-means++"`` or ``"random"`` (k distinct random points).
        chunk: rows per distance block.
        init_sample: k-means++ seeds from a random subset of ``init_sample * k`` points (its
            ``k`` sequential passes dominate the cost at 100k points; Lloyd then uses them all).
    Returns:
        ``(centres [k x D], labels [N])``. An emptied cluster keeps its previous centre.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N x D] tensor, got shape {tuple(x.shape)}")
    k = min(k, x.shape[0])
    g = torch.Generator().manual_seed(seed)
    if init == "k-means++":
        pool = x
        if x.shape[0] > init_sample * k:
            pool = x[torch.randperm(x.shape[0], generator=g)[: init_sample * k].to(x.device)]
        centres = kmeans_pp_init(pool, k, g)
    elif init == "random":
        centres = x[torch.randperm(x.shape[0], generator=g)[:k].to(x.device)]
    else:
        raise ValueError(f"unknown k-means init '{init}'")
    labels = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        new, _ = nearest_centre(x, centres, chunk)
        if torch.equal(new, labels):
            return centres, labels
        labels = new
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        filled = counts > 0
        centres = torch.where(filled[:, None], sums / counts.clamp_min(1)[:, None], centres)
    return centres, nearest_centre(x, centres, chunk)[0]
