"""Run-size profiles of the alignment.

* ``paper``: supplementary Table 5's 1000 AdamW steps with our full-size [R] defaults (every
  dense point and relation, the 60 x 60 grid). The GPU default.
* ``cpu``: the same schedules stretched to 400 steps (:func:`semalign3d.config.scale_schedules`
  keeps their shape), at most 8 cube-rotation starts, a 30 x 30 alignment grid
  (``cell_stride`` 2), 300 dense points and 2000 relations per family (each only ever lowered:
  smaller configured values are kept): about two seconds per image on 2 CPU cores.

Both keep the configured starts: by default one pose fitted to each image entering the
schedules at ``schedule_skip`` (:mod:`semalign3d.align.fitted_starts`). Chosen on the synthetic
validation set (seed 1) at the ``cpu`` size, against 8 cube starts with the whole schedule
(mean pair PCK@0.1 over 4 categories 81.9 vs 81.5, at an eighth of the cost; book chapter 7).
There, 24 cube starts pruned to 4 after 30 % of the steps (``prune_at``) gained nothing over 8
(tvmonitor / aeroplane 71.1 / 76.9 vs 75.0 / 81.7). The ``cpu`` profile's relation subsample
costs up to about a point against every relation (``book/measured/README.md``), which is why
``paper`` keeps them all.
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
    """Table 5's values for ``category`` over ``base`` (where ``base`` kept the defaults: a
    configured value wins, :func:`semalign3d.config.table5`), then the run-size ``profile``."""
    return apply_profile(table5(category, base), profile)
