"""The reconstruction likelihood of a projected point cloud (method.md §2.11b, Eqs. 5-9, [R] form).

For image cells ``u`` (normalised coordinates) and projected model points ``pi(c_i)`` with
precomputed ``log p_sem(u, i)``, Eq. 5's per-pair log-likelihood is

``l(u, i) = log p_sem(u, i) - |u - pi(c_i)|^2 / (2 sigma^2)``   (unnormalised Gaussian),

and the negative log-likelihood of the image is one of ([R], method.md §5.2.2):

* ``"pixels"``: ``-mean_{u in Omega} log(max_i exp l(u, i) + eps)``: every foreground cell must be
  explained by some point;
* ``"points"``: ``-mean_i log(max_{u in Omega} exp l(u, i) + eps)``: every point must find a cell.

All functions take hypotheses as leading ``[I x H]`` dims (images x hypotheses) and the image
tables as ``[I x ...]``; they broadcast over ``H`` without copying the tables.
"""

from __future__ import annotations

import math

import torch


def pair_log_likelihood(
    proj: torch.Tensor,
    cells: torch.Tensor,
    log_sem: torch.Tensor,
    sigma: torch.Tensor | float,
    log_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """``l(u, i)`` for every cell and point.

    Args:
        proj: ``[I x H x M x 2]`` projected points (normalised).
        cells: ``[I x P x 2]`` cell centres (normalised).
        log_sem: ``[I x P x M]`` ``log p_sem``.
        sigma: spatial width (normalised units), scalar.
        log_visible: optional ``[I x H x M]`` log visibility of each point (added to every cell).
    Returns:
        ``[I x H x P x M]``.
    """
    c2 = (cells**2).sum(-1)[:, None, :, None]
    p2 = (proj**2).sum(-1)[:, :, None, :]
    cp = torch.matmul(cells[:, None], proj.transpose(-1, -2))
    d2 = (c2 + p2 - 2 * cp).clamp_min(0)
    out = log_sem[:, None] - d2 / (2 * sigma**2)
    if log_visible is not None:
        out = out + log_visible[:, :, None, :]
    return out


def _floor(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``log(exp(x) + eps)``: the likelihood floor keeps unexplained cells finite."""
    return torch.logaddexp(x, torch.full_like(x, math.log(eps)))


@torch.no_grad()
def _table(proj, cells, log_sem, sigma, log_visible) -> torch.Tensor:
    """:func:`pair_log_likelihood` computed in place without autograd (the hot loop's largest
    tensor is written once and never stored for backward)."""
    if torch.compiler.is_compiling():
        # Under torch.compile the distances are written out per coordinate, so inductor fuses
        # them into the reduction that consumes the table (the callers' argmax) and the
        # ``I x H x P x M`` table is never stored. A matmul is a separate kernel writing it: this
        # took a full-size H100 alignment from 32.9 to 30.3 ms (bench/RESULTS.md). Eager keeps
        # the in-place matmul, whose one table is the least memory without fusion.
        dx = cells[:, None, :, None, 0] - proj[:, :, None, :, 0]
        dy = cells[:, None, :, None, 1] - proj[:, :, None, :, 1]
        t = log_sem[:, None] - (dx * dx + dy * dy) / (2 * sigma**2)
        return t if log_visible is None else t + log_visible[:, :, None, :]
    t = torch.matmul(cells[:, None], proj.transpose(-1, -2))
    t.mul_(2).sub_((cells**2).sum(-1)[:, None, :, None]).sub_((proj**2).sum(-1)[:, :, None, :])
    t.clamp_max_(0).div_(2 * sigma**2).add_(log_sem[:, None])
    if log_visible is not None:
        t.add_(log_visible[:, :, None, :])
    return t


def nll_pixels(
    proj: torch.Tensor,
    cells: torch.Tensor,
    weight: torch.Tensor,
    log_sem: torch.Tensor,
    sigma: torch.Tensor | float,
    eps: float = 1e-4,
    log_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eqs. 6-8, "pixels": mean over foreground cells of the best point's NLL.

    The best point of each cell is found without autograd and its term recomputed with it: the
    same value and (sub)gradient as differentiating ``max``, at the memory of one table.

    Args:
        proj: ``[I x H x M x 2]``; cells: ``[I x P x 2]``; weight: ``[I x P]`` (0 = padding);
        log_sem: ``[I x P x M]``; sigma: scalar; eps: likelihood floor;
        log_visible: optional ``[I x H x M]``.
    Returns:
        ``[I x H]``.
    """
    i_n, h_n, m_n = proj.shape[:3]
    p_n = cells.shape[1]
    idx = _table(proj, cells, log_sem, sigma, log_visible).argmax(-1)  # [I x H x P]
    p_sel = torch.gather(proj, 2, idx[..., None].expand(i_n, h_n, p_n, 2))
    best = torch.gather(log_sem[:, None].expand(i_n, h_n, p_n, m_n), 3, idx[..., None])[..., 0]
    best = best - ((cells[:, None] - p_sel) ** 2).sum(-1) / (2 * sigma**2)
    if log_visible is not None:
        best = best + torch.gather(log_visible, 2, idx)
    ll = _floor(best, eps) * weight[:, None]
    return -ll.sum(-1) / weight.sum(-1).clamp_min(1e-12)[:, None]


def nll_points(
    proj: torch.Tensor,
    cells: torch.Tensor,
    weight: torch.Tensor,
    log_sem: torch.Tensor,
    sigma: torch.Tensor | float,
    eps: float = 1e-4,
    log_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eqs. 6-8, "points": mean over points of the best cell's NLL (the cells given: Omega, or
    more with ``AlignConfig.sparse_cells``).

    Shapes as :func:`nll_pixels`; returns ``[I x H]``. With ``log_visible`` the mean is weighted
    by each point's visibility (an occluded point need not find a cell).
    """
    i_n, h_n, m_n = proj.shape[:3]
    p_n = cells.shape[1]
    with torch.no_grad():
        table = _table(proj, cells, log_sem, sigma, None)
        table.masked_fill_((weight <= 0)[:, None, :, None], float("-inf"))
        idx = table.argmax(-2)  # [I x H x M]
    c_sel = torch.gather(cells[:, None].expand(i_n, h_n, p_n, 2), 2,
                         idx[..., None].expand(i_n, h_n, m_n, 2))
    best = torch.gather(log_sem[:, None].expand(i_n, h_n, p_n, m_n), 2, idx[:, :, None])[:, :, 0]
    best = best - ((c_sel - proj) ** 2).sum(-1) / (2 * sigma**2)
    ll = _floor(best, eps)
    if log_visible is None:
        return -ll.mean(-1)
    v = log_visible.exp()
    return -(ll * v).sum(-1) / v.sum(-1).clamp_min(1e-12)


def nll(kind: str, *args, **kwargs) -> torch.Tensor:
    """Dispatch to :func:`nll_pixels` or :func:`nll_points` by name."""
    if kind == "pixels":
        return nll_pixels(*args, **kwargs)
    if kind == "points":
        return nll_points(*args, **kwargs)
    raise ValueError(f"unknown likelihood variant {kind!r}; expected 'pixels' or 'points'")
