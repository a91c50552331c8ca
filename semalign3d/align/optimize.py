"""Sigma-annealed multi-hypothesis optimisation of the alignment energy (method.md §2.11).

All images and hypotheses of a batch are one tensor program: keypoints ``[I x H x K x 3]`` and
inverse focals ``[I x H]`` are the parameters of a single AdamW, whose summed energy separates
over hypotheses (so Adam's per-coordinate steps are exactly those of independent runs). Table 5's
schedules are evaluated once before the loop. The best hypothesis of each image is the one with
the lowest energy at the final step. With ``cfg.prune_at`` the many starts run only through the
coarse, large-sigma part of the schedule; then each image keeps its ``cfg.prune_keep`` best
hypotheses (with their AdamW moments) for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from semalign3d.align.energy import TERMS, energy_terms, project, schedule_tables, total_energy
from semalign3d.align.hypotheses import Hypotheses, gather_hypotheses, initial_hypotheses
from semalign3d.align.model import AlignModel
from semalign3d.align.target import TargetBatch
from semalign3d.config import AlignConfig
from semalign3d.geometry import to_pixels


@dataclass(frozen=True)
class Alignment:
    """The fitted representation of one image.

    Attributes:
        name: image key.
        height, width: image size in pixels.
        keypoints: ``[K x 3]`` camera-frame keypoints of the best hypothesis.
        focal: its focal length (normalised units).
        keypoints_2d: ``[K x 2]`` projected keypoints in pixels.
        energy: ``[T]`` total energy of the best hypothesis at every step.
        terms: ``{term: [T]}`` unweighted energy terms of the best hypothesis.
        hypothesis: index of the best hypothesis.
        final_energies: ``[H]`` final energy of every hypothesis (inf for pruned ones).
    """

    name: str
    height: int
    width: int
    keypoints: torch.Tensor
    focal: float
    keypoints_2d: torch.Tensor
    energy: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    hypothesis: int = 0
    final_energies: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def to_dict(self) -> dict:
        """JSON-able form (floats round-trip exactly through ``json``)."""
        return {
            "name": self.name,
            "height": self.height,
            "width": self.width,
            "keypoints": self.keypoints.tolist(),
            "focal": self.focal,
            "keypoints_2d": self.keypoints_2d.tolist(),
            "energy": self.energy.tolist(),
            "terms": {k: v.tolist() for k, v in self.terms.items()},
            "hypothesis": self.hypothesis,
            # pruned hypotheses (inf) as null: strict JSON has no Infinity
            "final_energies": [v if math.isfinite(v) else None
                               for v in self.final_energies.tolist()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Alignment:
        t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return cls(
            name=d["name"],
            height=int(d["height"]),
            width=int(d["width"]),
            keypoints=t(d["keypoints"]).reshape(-1, 3),
            focal=float(d["focal"]),
            keypoints_2d=t(d["keypoints_2d"]).reshape(-1, 2),
            energy=t(d["energy"]),
            terms={k: t(v) for k, v in d["terms"].items()},
            hypothesis=int(d["hypothesis"]),
            final_energies=t([math.inf if v is None else v for v in d["final_energies"]]),
        )

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Pixels ``[M x 2]`` of camera-frame points ``[M x 3]`` under this alignment's camera."""
        s = float(max(self.height, self.width))
        pp = torch.tensor([self.width / (2 * s), self.height / (2 * s)], dtype=points.dtype)
        uv = self.focal * points[:, :2] / points[:, 2:3].clamp_min(1e-3) + pp
        return to_pixels(uv, self.height, self.width)


def _energy_fn(model: AlignModel, cfg: AlignConfig) -> Callable:
    def fn(kps, finv, batch, sig_d, sig_s, weights):
        terms = energy_terms(kps, 1.0 / finv.abs(), batch, model, sig_d, sig_s, cfg)
        return total_energy(terms, weights), terms

    # dynamic=None: the first graph is specialised; a shape that changes (the cell count differs
    # per image) recompiles once as dynamic instead of once per image, which after eight images
    # would silently fall back to eager
    return torch.compile(fn, dynamic=None) if cfg.compile else fn


def align(
    batch: TargetBatch,
    model: AlignModel,
    cfg: AlignConfig,
    init: Hypotheses | None = None,
    progress: bool = False,
    on_step: Callable[[int, dict[str, float], torch.Tensor, torch.Tensor], None] | None = None,
) -> list[Alignment]:
    """Fit the model to every image of ``batch``.

    Args:
        batch: the images (see :func:`semalign3d.align.target.stack_targets`).
        model: the category model on the batch's device and dtype.
        cfg: schedules, learning rate, steps, variants.
        init: initial hypotheses (default :func:`initial_hypotheses`).
        progress: show a tqdm bar over steps.
        on_step: called as ``on_step(t, schedule_values, keypoints, focal_inv)`` before each
            step with the live ``[I x H x K x 3]`` / ``[I x H]`` parameters (tests, logging,
            trajectories; detach and clone what you keep). After pruning (``cfg.prune_at``)
            ``H`` is ``cfg.prune_keep``.
    Returns:
        One :class:`Alignment` per image, in batch order.
    """
    dev, dt = batch.cells.device, batch.cells.dtype
    model = model.to(dev, dt)
    init = init or initial_hypotheses(batch, model, cfg)
    kps = init.keypoints.detach().clone().requires_grad_(True)
    finv = init.focal_inv.detach().clone().requires_grad_(cfg.optimize_focal)
    params = [kps, finv] if cfg.optimize_focal else [kps]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    tables = schedule_tables(cfg, dev, dt)
    fn = _energy_fn(model, cfg)
    n_t = cfg.n_steps
    i_n, h_n = finv.shape
    # original hypothesis index of every live column (pruning drops columns)
    live = torch.arange(h_n, device=dev).expand(i_n, h_n)
    prune_t = prune_step(cfg, h_n)
    trace = torch.full((n_t, len(TERMS) + 1, i_n, h_n), float("nan"), dtype=dt, device=dev)
    for t in tqdm(range(n_t), desc="align", disable=not progress, leave=False):
        row = tables.values[t]
        if t == prune_t:
            kps, finv, opt, live = _prune(kps, finv, opt, live, trace[t - 1, 0], cfg.prune_keep)
        if cfg.lr_final != 1.0:
            cos = 0.5 * (1 + math.cos(math.pi * t / max(n_t - 1, 1)))
            opt.param_groups[0]["lr"] = cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * cos)
        if on_step is not None:
            on_step(t, tables.at(t), kps, finv)
        energy, terms = fn(kps, finv, batch, row[0], row[1], row[2:])
        opt.zero_grad(set_to_none=True)
        # non-finite hypotheses must not poison the others' gradients
        energy.masked_fill(~torch.isfinite(energy), 0.0).sum().backward()
        opt.step()
        with torch.no_grad():
            vals = torch.stack([energy.detach()] + [terms[n].detach() for n in TERMS])
            trace[t].scatter_(-1, live.expand_as(vals), vals)
    with torch.no_grad():
        last = tables.values[n_t - 1]
        final_live, _ = fn(kps, finv, batch, last[0], last[1], last[2:])
        final_live = torch.where(torch.isfinite(final_live), final_live,
                                 torch.full_like(final_live, float("inf")))
        final = torch.full((i_n, h_n), float("inf"), dtype=dt, device=dev)
        final.scatter_(-1, live, final_live)
        best_live = final_live.argmin(-1)
        focal = 1.0 / finv.abs()
        out = []
        for i in range(i_n):
            c = int(best_live[i])
            b = int(live[i, c])
            k3 = kps[i, c]
            f = focal[i, c]
            uv = project(k3[None, None], f[None, None], batch.principal[i : i + 1])[0, 0]
            hh, ww = batch.sizes[i]
            out.append(Alignment(
                name=batch.names[i],
                height=hh,
                width=ww,
                keypoints=k3.detach().cpu().double(),
                focal=float(f),
                keypoints_2d=to_pixels(uv, hh, ww).cpu().double(),
                energy=trace[:, 0, i, b].cpu().double(),
                terms={n: trace[:, j + 1, i, b].cpu().double() for j, n in enumerate(TERMS)},
                hypothesis=b,
                final_energies=final[i].cpu().double(),
            ))
    return out


def prune_step(cfg: AlignConfig, n_hypotheses: int) -> int | None:
    """The step at which only the ``cfg.prune_keep`` lowest-energy hypotheses per image go on,
    or None when nothing is pruned."""
    if cfg.prune_keep < 1:
        raise ValueError(f"prune_keep must be >= 1, got {cfg.prune_keep}")
    if not 0 <= cfg.prune_at < 1:
        raise ValueError(f"prune_at is a fraction of the steps in [0, 1), got {cfg.prune_at}")
    if not 0 < cfg.prune_at < 1 or cfg.prune_keep >= n_hypotheses:
        return None
    return max(1, round(cfg.prune_at * cfg.n_steps))


def _prune(kps, finv, opt, live, energy_all, keep):
    """Keep the ``keep`` live hypotheses of lowest energy (``energy_all [I x H]``, indexed by
    original hypothesis: the energies evaluated at the previous step, before its update);
    AdamW's moments follow their parameters, so a kept hypothesis goes on exactly as it would
    have."""
    with torch.no_grad():
        e = torch.gather(energy_all, 1, live)
        e = torch.where(torch.isfinite(e), e, torch.full_like(e, float("inf")))
        sel = e.topk(keep, dim=-1, largest=False).indices.sort(-1).values  # [I x k]
        new = {}
        for name, p in (("kps", kps), ("finv", finv)):
            new[name] = gather_hypotheses(p.detach(), sel).requires_grad_(p.requires_grad)
    params = [new["kps"], new["finv"]] if finv.requires_grad else [new["kps"]]
    new_opt = torch.optim.AdamW(params)
    new_opt.param_groups[0].update({k: v for k, v in opt.param_groups[0].items() if k != "params"})
    for old, p in ((kps, new["kps"]), (finv, new["finv"])):
        state = opt.state.get(old)
        if state:
            new_opt.state[p] = {
                k: gather_hypotheses(v, sel) if torch.is_tensor(v) and v.dim() >= 2 else v
                for k, v in state.items()
            }
    return new["kps"], new["finv"], new_opt, torch.gather(live, 1, sel)
