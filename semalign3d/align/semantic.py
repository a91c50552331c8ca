"""The semantic likelihood ``p_sem`` between image patches and model points (method.md §2.11b).

``p_sem`` depends only on the image descriptors and the model's point features, never on the pose,
so it is computed once per image, in log space, and kept out of the optimisation loop.

Two candidate forms ([R], method.md §5.2.1), ``s = <F(u), phi_i>`` the cosine similarity:

* ``"calibrated"``: one-sided p-value against the training statistics of point ``i``,
  ``p = 2 (1 - Phi(max(0, mu_i - s) / sd_i))``; similarities above the training mean are not
  penalised.
* ``"gaussian"``: ``p = exp(-(1 - s)^2 / (2 sigma_sem^2))``.
"""

from __future__ import annotations

import math

import torch

_MIN_STD = 1e-3  # a point seen with identical similarity in every training image


def log_p_sem(
    sims: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    kind: str = "calibrated",
    sigma_sem: float = 0.3,
) -> torch.Tensor:
    """``log p_sem`` of cosine similarities.

    Args:
        sims: ``[... x M]`` cosine similarities between patches and ``M`` model points.
        mean, std: ``[M]`` training similarity statistics of the points (``"calibrated"``).
        kind: ``"calibrated"`` or ``"gaussian"``.
        sigma_sem: width of the ``"gaussian"`` form in similarity units.
    Returns:
        ``[... x M]`` log-likelihoods (``<= 0``).
    """
    if kind == "calibrated":
        z = (mean.to(sims) - sims).clamp_min(0) / std.to(sims).clamp_min(_MIN_STD)
        # log(2 (1 - Phi(z))) = log 2 + log Phi(-z), stable far in the tail
        return (torch.special.log_ndtr(-z) + math.log(2.0)).clamp_max(0.0)
    if kind == "gaussian":
        return -((1 - sims) ** 2) / (2 * sigma_sem**2)
    raise ValueError(f"unknown p_sem form {kind!r}; expected 'calibrated' or 'gaussian'")


def similarities(patches: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of unit descriptors ``[... x P x C]``, ``[M x C]`` -> ``[..x P x M]``."""
    if patches.shape[-1] != points.shape[-1]:
        raise ValueError(
            f"descriptor dimension mismatch: image patches have {patches.shape[-1]} channels, "
            f"model points {points.shape[-1]}"
        )
    return patches @ points.to(patches).T
