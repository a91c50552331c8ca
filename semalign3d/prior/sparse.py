"""The canonical sparse keypoint cloud from the Beta prior (method.md §2.7).

Greedy maximum-likelihood placement: the shortest edge first (endpoints at ±0.01), then one
keypoint at a time, each by exhaustive search over a cube of candidates scored with the
geometric NLL of the relations it closes; finally all keypoints are refined jointly.
"""

from __future__ import annotations

import torch

from semalign3d.prior.beta import beta_mode
from semalign3d.prior.shape_prior import ShapePrior, geometric_nll


def shortest_edge_pair(prior: ShapePrior, k: int) -> tuple[int, int]:
    """The edge that is shortest by the Beta-mode ratios: the lowest mean of its own ratio
    ``r = |e| / (|e| + |e'|)`` over all valid edge pairs it appears in."""
    if prior.num_edges == 0:
        return 0, 1
    r = beta_mode(prior.edge_ratio_ab[:, 0], prior.edge_ratio_ab[:, 1]).double()
    idx = prior.edge_index
    code = lambda a, b: a * k + b  # noqa: E731 - edge (a<b) -> flat id
    e1, e2 = code(idx[:, 0], idx[:, 1]), code(idx[:, 2], idx[:, 3])
    total = torch.zeros(k * k, dtype=r.dtype).index_add_(0, e1, r).index_add_(0, e2, 1 - r)
    count = torch.zeros(k * k, dtype=r.dtype).index_add_(0, e1, torch.ones_like(r))
    count.index_add_(0, e2, torch.ones_like(r))
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, 2.0))
    best = int(mean.argmin())
    return best // k, best % k


def _closing(index: torch.Tensor, placed: torch.Tensor, cand: int) -> torch.Tensor:
    """Bool ``[R]``: relations containing ``cand`` whose other slots are all placed."""
    has = (index == cand).any(-1)
    others = placed[index] | (index == cand)
    return has & others.all(-1)


def _next_keypoint(prior: ShapePrior, placed: torch.Tensor) -> int:
    """Unplaced keypoint connected to the placed set (an edge pair with its other three slots
    placed) with the smallest Beta-mode ratio of its edge; -1 if none is connected."""
    idx = prior.edge_index
    if idx.shape[0] == 0:
        return -1
    r = beta_mode(prior.edge_ratio_ab[:, 0], prior.edge_ratio_ab[:, 1])
    pl = placed[idx]  # [E x 4]
    missing = (~pl).sum(-1)
    one = missing == 1
    if not bool(one.any()):
        return -1
    slot = (~pl[one]).to(torch.long).argmax(-1)  # which slot holds the unplaced keypoint
    kp = idx[one].gather(1, slot[:, None])[:, 0]
    own = torch.where(slot < 2, r[one], 1 - r[one])  # ratio of the keypoint's own edge
    k = placed.shape[0]
    best = torch.full((k,), float("inf"), dtype=own.dtype).scatter_reduce(0, kp, own, reduce="amin")
    return int(best.argmin())


def _select(mask: torch.Tensor, limit: int) -> torch.Tensor:
    """The first ``limit`` true positions of ``mask`` in a fixed pseudo-random order, spread over
    all relations rather than the low keypoint ids."""
    pos = torch.nonzero(mask).flatten()
    if pos.numel() <= limit:
        return pos
    g = torch.Generator().manual_seed(pos.numel())
    return pos[torch.randperm(pos.numel(), generator=g)[:limit]].sort().values


def _grid_search(
    base: torch.Tensor, cand: int, prior: ShapePrior, centre: torch.Tensor, side: float, grid: int
) -> tuple[torch.Tensor, float]:
    """Best position of keypoint ``cand`` over a ``grid^3`` cube; returns ``(xyz [3], nll)``."""
    base = base.float()
    prior = prior.to(dtype=torch.float32)
    lin = torch.linspace(-side / 2, side / 2, grid)
    cube = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3) + centre
    centre = centre.float()
    best_val, best_xyz = float("inf"), centre
    chunk = max(1, (1 << 22) // max(1, prior.num_edges + prior.num_tets) // 4)
    for s in range(0, cube.shape[0], chunk):
        c = cube[s : s + chunk]
        pts = base.expand(c.shape[0], -1, -1).clone()
        pts[:, cand] = c
        nll = geometric_nll(pts, prior)
        v, i = nll.min(0)
        if float(v) < best_val:
            best_val, best_xyz = float(v), c[i]
    return best_xyz, best_val


def place_greedy(
    prior: ShapePrior, k: int, grid: int = 40, max_relations: int = 100, side: float = 1.0
) -> tuple[torch.Tensor, list[int]]:
    """Greedy placement of ``k`` keypoints (method.md §2.7, steps 1-4).

    Each keypoint is searched on a ``grid^3`` cube of side ``side`` centred at the mean of the
    placed points, then once more on an ``11^3`` cube of two cell widths around the best cell
    (a coarse-to-fine step [R] so a CPU-sized grid keeps the 100^3 grid's precision). Candidates
    are scored in float32, which halves the dominant cost.

    Args:
        prior: the shape prior over keypoint positions ``0..k-1``.
        k: number of keypoints.
        grid: candidates per axis.
        max_relations: at most this many edge and this many tet relations score a candidate.
        side: cube side.
    Returns:
        ``([k x 3] float64 positions, placement order)``.
    """
    if k < 2:
        raise ValueError(f"the sparse cloud needs at least 2 keypoints, got {k}")
    prior = prior.to(dtype=torch.float64)
    pts = torch.zeros(k, 3, dtype=torch.float64)
    placed = torch.zeros(k, dtype=torch.bool)
    i, j = shortest_edge_pair(prior, k)
    pts[i], pts[j] = -0.01, 0.01
    placed[i] = placed[j] = True
    order = [i, j]
    while not bool(placed.all()):
        cand = _next_keypoint(prior, placed)
        if cand < 0:
            cand = int(torch.nonzero(~placed)[0])
        edges = _select(_closing(prior.edge_index, placed, cand), max_relations)
        tets = (
            _select(_closing(prior.tet_index, placed, cand), max_relations)
            if int(placed.sum()) >= 3
            else torch.zeros(0, dtype=torch.long)
        )
        centre = pts[placed].mean(0)
        if edges.numel() + tets.numel() == 0:
            pts[cand] = centre  # no usable relation: the centre, as in the code
        else:
            sub = prior.subset(edges, tets)
            xyz, _ = _grid_search(pts, cand, sub, centre, side, grid)
            step = side / max(grid - 1, 1)
            xyz, _ = _grid_search(pts, cand, sub, xyz, 2 * step, 11)
            pts[cand] = xyz.double()
        placed[cand] = True
        order.append(cand)
    return pts, order


def refine(
    points: torch.Tensor, prior: ShapePrior, steps: int = 2000, lr: float = 1e-3, progress=False
) -> tuple[torch.Tensor, dict[str, float]]:
    """Joint AdamW refinement of all keypoints on the full geometric NLL (§2.7 step 5).

    Args:
        points: ``[K x 3]`` start; prior: the shape prior; steps, lr: AdamW settings.
    Returns:
        ``([K x 3] refined, {"nll_initial", "nll_final"})``.
    """
    prior = prior.to(dtype=torch.float64)
    x = points.detach().to(torch.float64).clone().requires_grad_(True)
    opt = torch.optim.AdamW([x], lr=lr)
    first = float(geometric_nll(x.detach()[None], prior)[0])
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="refine", leave=False)
    for _ in it:
        opt.zero_grad()
        loss = geometric_nll(x[None], prior)[0]
        loss.backward()
        opt.step()
    last = float(geometric_nll(x.detach()[None], prior)[0])
    return x.detach(), {"nll_initial": first, "nll_final": last}
