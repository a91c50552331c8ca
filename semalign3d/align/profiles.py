"""Run-size profiles of the alignment.

* ``paper``: supplementary Table 5 as published (1000 AdamW steps) with our full-size [R]
  defaults (24 rotation hypotheses, every dense point and relation, the 60 x 60 grid). The GPU
  default.
* ``cpu``: the same schedules stretched to 400 steps (:func:`semalign3d.config.scale_schedules`
  keeps their shape), 8 rotation hypotheses, a 30 x 30 alignment grid (``cell_stride`` 2), 300
  dense points and 2000 relations per family (each only ever lowered: smaller configured values
  are kept): a few seconds per image on 2 CPU cores. Measured on the synthetic validation set
  (seed 1), 24 hypotheses pruned to 4 after 30 % of the steps (``prune_at``) gained nothing
  over these 8 (tvmonitor / aeroplane pair PCK@0.1 71.1 / 76.9 vs 75.0 / 81.7, aligned-keypoint
  PCK 74.5 / 75.4 vs 76.1 / 75.1), so it is not part of the profile.
"""

from __future__ import annotations

from semalign3d.config import AlignConfig, replace, scale_schedules, table5

PROFILES = ("cpu", "paper")


def apply_profile(cfg: AlignConfig, profile: str) -> AlignConfig:
    """``cfg`` resized by ``profile`` (see the module docstring)."""
    if profile == "paper":
        return cfg
    if profile == "cpu":
        # only ever reduces: a smaller value set in the config is kept

        def cap(v: int, limit: int) -> int:
            return limit if v == 0 else min(v, limit)

        cfg = scale_schedules(cfg, min(cfg.n_steps, 400))
        return replace(cfg, n_rotations=min(cfg.n_rotations, 8),
                       cell_stride=max(cfg.cell_stride, 2),
                       max_dense_points=cap(cfg.max_dense_points, 300),
                       max_geom_relations=cap(cfg.max_geom_relations, 2000))
    raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")


def category_config(category: str, base: AlignConfig, profile: str) -> AlignConfig:
    """Table 5's values for ``category`` over ``base``, then the run-size ``profile``."""
    return apply_profile(table5(category, base), profile)
