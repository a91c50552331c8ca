"""Beta distributions on [0, 1]: log-density and a vectorised maximum-likelihood fit.

The fit replaces the authors' Python loop of ``scipy.stats.beta.fit(x, floc=0, fscale=1)`` (one
call per relation, ~94k relations for a 30-keypoint category) by one batched computation:
a method-of-moments start followed by Newton steps on the log-likelihood, whose sufficient
statistics are ``mean(log x)`` and ``mean(log(1 - x))``.
"""

from __future__ import annotations

import torch


def beta_log_pdf(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log Beta(x; a, b)``; all arguments broadcast. ``x`` must lie in (0, 1)."""
    lbeta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    return (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-x) - lbeta


def beta_mode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mode ``(a - 1) / (a + b - 2)`` (defined for ``a, b > 1``; clamped to [0, 1] otherwise)."""
    return ((a - 1) / (a + b - 2)).clamp(0, 1)


def fit_beta(
    x: torch.Tensor,
    valid: torch.Tensor | None = None,
    eps: float = 1e-3,
    newton_steps: int = 20,
    min_samples: int = 2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum-likelihood Beta parameters of many samples at once.

    Args:
        x: ``[N x R]`` samples (column r belongs to relation r); values are clamped to
            ``[eps, 1 - eps]``.
        valid: ``[N x R]`` bool, which samples count (default: all non-NaN).
        eps: clamp margin.
        newton_steps: Newton iterations after the moment-matching start.
        min_samples: relations with fewer samples get the uniform ``(1, 1)``.
    Returns:
        ``(a [R], b [R], n [R])``: parameters and the number of samples used.
    """
    if valid is None:
        valid = ~torch.isnan(x)
    dt = torch.float64  # digamma/trigamma Newton steps need the precision
    xv = torch.where(valid, x, torch.full_like(x, 0.5)).to(dt).clamp(eps, 1 - eps)
    w = valid.to(dt)
    n = w.sum(0)
    nz = n.clamp_min(1)
    mean = (w * xv).sum(0) / nz
    var = (w * (xv - mean) ** 2).sum(0) / (nz - 1).clamp_min(1)
    var = torch.minimum(var.clamp_min(1e-8), mean * (1 - mean) * 0.999)
    common = mean * (1 - mean) / var - 1
    a = (mean * common).clamp(1e-2, 1e4)
    b = ((1 - mean) * common).clamp(1e-2, 1e4)
    s1 = (w * torch.log(xv)).sum(0) / nz
    s2 = (w * torch.log1p(-xv)).sum(0) / nz
    # Newton on theta = (log a, log b) keeps the parameters positive without projections.
    la, lb = a.log(), b.log()
    for _ in range(newton_steps):
        a, b = la.exp(), lb.exp()
        dab = torch.digamma(a + b)
        ga = s1 - torch.digamma(a) + dab  # d loglik / d a (per sample)
        gb = s2 - torch.digamma(b) + dab
        tab = torch.polygamma(1, a + b)
        haa = -torch.polygamma(1, a) + tab
        hbb = -torch.polygamma(1, b) + tab
        hab = tab
        # chain rule to log-parameters
        g1, g2 = ga * a, gb * b
        h11 = haa * a * a + ga * a
        h22 = hbb * b * b + gb * b
        h12 = hab * a * b
        det = h11 * h22 - h12 * h12
        d1 = (h22 * g1 - h12 * g2) / det
        d2 = (h11 * g2 - h12 * g1) / det
        ok = torch.isfinite(d1) & torch.isfinite(d2) & (det > 0) & (h11 < 0)
        # an ill-conditioned Hessian falls back to a small gradient-ascent step
        d1 = torch.where(ok, -d1, 0.1 * g1.sign())
        d2 = torch.where(ok, -d2, 0.1 * g2.sign())
        la = la + d1.clamp(-1, 1)
        lb = lb + d2.clamp(-1, 1)
    a, b = la.exp(), lb.exp()
    few = n < min_samples
    a = torch.where(few | ~torch.isfinite(a), torch.ones_like(a), a)
    b = torch.where(few | ~torch.isfinite(b), torch.ones_like(b), b)
    return a.to(x.dtype), b.to(x.dtype), n.to(torch.long)
