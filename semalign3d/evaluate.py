"""PCK evaluation (method.md §3 and §8).

A prediction is correct when its distance to the ground truth is within ``alpha * max(w, h)`` of
the **target** bounding box. Two averages are reported, always labelled:

* ``per_image``: mean over pairs of each pair's fraction of correct keypoints (GeoAware-SC's
  default and the paper's Table 1 protocol);
* ``per_keypoint``: all keypoints pooled.

Overall figures come both weighted by pairs/keypoints (``all``) and as the plain mean of the
category figures (``all_mean_of_categories``; the paper's "All" = 88.9 is that mean).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

DEFAULT_ALPHAS = (0.1, 0.05, 0.01, 0.15)


def correct_keypoints(
    pred: torch.Tensor,
    gt: torch.Tensor,
    bbox_size: float,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    comparison: str = "<=",
) -> torch.Tensor:
    """Correctness of each keypoint at each alpha.

    Args:
        pred, gt: ``[N x 2]`` pixel coordinates (a NaN prediction counts as wrong).
        bbox_size: ``max(w, h)`` of the target box in pixels.
        alphas: thresholds as fractions of ``bbox_size``.
        comparison: ``"<="`` (DIFT-style) or ``"<"`` (GeoAware-SC-style).
    Returns:
        ``[A x N]`` bool.
    """
    if comparison not in ("<=", "<"):
        raise ValueError(f"comparison must be '<=' or '<', got {comparison!r}")
    dist = (pred.to(torch.float64) - gt.to(torch.float64)).norm(dim=-1)
    thr = torch.tensor(list(alphas), dtype=torch.float64)[:, None] * float(bbox_size)
    ok = dist[None] <= thr if comparison == "<=" else dist[None] < thr
    return ok & ~torch.isnan(dist)[None]


@dataclass(frozen=True)
class PairScore:
    """Correctness of one pair's keypoints: ``correct [A x N]`` bool."""

    name: str
    category: str
    correct: torch.Tensor
    viewpoint_variation: int = 0


def _summary(scores: Sequence[PairScore], a: int) -> dict:
    by_cat: dict[str, list[PairScore]] = defaultdict(list)
    for s in scores:
        by_cat[s.category].append(s)
    per_image: dict[str, float] = {}
    per_kpt: dict[str, float] = {}
    for cat in sorted(by_cat):
        group = [s for s in by_cat[cat] if s.correct.shape[1] > 0]
        per_image[cat] = 100.0 * sum(float(s.correct[a].double().mean()) for s in group) / max(
            len(group), 1
        )
        n = sum(s.correct.shape[1] for s in group)
        per_kpt[cat] = 100.0 * sum(int(s.correct[a].sum()) for s in group) / max(n, 1)
    nonempty = [s for s in scores if s.correct.shape[1] > 0]
    n_all = sum(s.correct.shape[1] for s in nonempty)
    cats = sorted(by_cat)
    per_image["all"] = 100.0 * sum(float(s.correct[a].double().mean()) for s in nonempty) / max(
        len(nonempty), 1
    )
    per_kpt["all"] = 100.0 * sum(int(s.correct[a].sum()) for s in nonempty) / max(n_all, 1)
    per_image["all_mean_of_categories"] = sum(per_image[c] for c in cats) / max(len(cats), 1)
    per_kpt["all_mean_of_categories"] = sum(per_kpt[c] for c in cats) / max(len(cats), 1)
    return {"per_image": per_image, "per_keypoint": per_kpt}


def summarize(
    scores: Sequence[PairScore], alphas: Sequence[float], n_skipped: int = 0
) -> dict:
    """The eval-pairs summary: figures for the first alpha at the top level, a table for all.

    Returns ``{"per_image": {"all", "all_mean_of_categories", "<cat>"...}, "per_keypoint": {...},
    "alpha", "n_pairs", "n_skipped", "n_keypoints", "by_alpha": {"0.1": {...}, ...}}`` with
    values in percent.
    """
    by_alpha = {f"{al:g}": _summary(scores, i) for i, al in enumerate(alphas)}
    first = by_alpha[f"{alphas[0]:g}"]
    return {
        **first,
        "alpha": float(alphas[0]),
        "n_pairs": len(scores),
        "n_skipped": int(n_skipped),
        "n_keypoints": int(sum(s.correct.shape[1] for s in scores)),
        "by_alpha": by_alpha,
    }


def score_predictions(
    pairs: Iterable,
    predictions: Mapping[str, Sequence[Sequence[float]]],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    comparison: str = "<=",
) -> tuple[list[PairScore], list[str]]:
    """Score ``predictions`` (pair name -> target keypoints in ``kps_ids`` order) on ``pairs``.

    Returns the scores and the names of pairs without a prediction (skipped, never dropped
    silently). A prediction with the wrong number of points raises ``ValueError``.
    """
    scores, skipped = [], []
    for p in pairs:
        if p.name not in predictions:
            skipped.append(p.name)
            continue
        pred = torch.as_tensor(predictions[p.name], dtype=torch.float64).reshape(-1, 2)
        if pred.shape[0] != p.trg_kps.shape[0]:
            raise ValueError(
                f"prediction for pair '{p.name}' has {pred.shape[0]} points, the pair has "
                f"{p.trg_kps.shape[0]} keypoints"
            )
        ok = correct_keypoints(pred, p.trg_kps, p.trg_bbox_size, alphas, comparison)
        scores.append(PairScore(p.name, p.category, ok, p.viewpoint_variation))
    return scores, skipped


def format_table(summary: Mapping, title: str = "") -> str:
    """A plain-text PCK table (rows: categories; columns: alphas), labelled per-image and
    per-keypoint."""
    lines = [title] if title else []
    alphas = list(summary["by_alpha"])
    for kind in ("per_image", "per_keypoint"):
        label = "per-image (mean over pairs)" if kind == "per_image" else "per-keypoint (pooled)"
        lines.append(f"PCK {label}; 'all' = weighted by pairs, 'all_mean_of_categories' = "
                     "plain mean of categories")
        lines.append(f"{'category':<24}" + "".join(f"{'@' + a:>9}" for a in alphas))
        rows = list(summary["by_alpha"][alphas[0]][kind])
        for row in rows:
            vals = "".join(f"{summary['by_alpha'][a][kind][row]:9.1f}" for a in alphas)
            lines.append(f"{row:<24}{vals}")
    lines.append(f"pairs scored: {summary['n_pairs']}, skipped (no prediction): "
                 f"{summary['n_skipped']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class AlignmentScore:
    """How well one image's alignment places the model keypoints (no pair matching involved).

    Attributes:
        name: image key.
        pck: fraction of the image's annotated keypoints whose aligned projection is within
            ``alpha * bbox_size`` of the annotation.
        pck_mirrored: the same with left/right labels swapped (the mirror twin's score).
        n: annotated keypoints scored.
    """

    name: str
    pck: float
    pck_mirrored: float
    n: int

    @property
    def mirrored(self) -> bool:
        """The fit is the mirror twin: the swapped labelling scores strictly better."""
        return self.pck_mirrored > self.pck


def score_alignment(
    name: str,
    keypoints_2d: torch.Tensor,
    gt: torch.Tensor,
    bbox_size: float,
    swap: torch.Tensor,
    alpha: float = 0.1,
    comparison: str = "<=",
) -> AlignmentScore:
    """Score aligned model keypoints against an image's annotation.

    Args:
        keypoints_2d: ``[K x 2]`` aligned keypoints in pixels; gt: ``[K x 2]`` (NaN = not
            annotated), in the same keypoint order.
        swap: ``[K]`` long: position of each keypoint's left/right partner in that order.
        alpha, comparison: as :func:`correct_keypoints`.
    """
    if keypoints_2d.shape != gt.shape or swap.shape != gt.shape[:1]:
        raise ValueError(f"{name}: {tuple(keypoints_2d.shape)} aligned keypoints, "
                         f"{tuple(gt.shape)} annotations, {tuple(swap.shape)} swap entries")
    vis = ~torch.isnan(gt[:, 0])
    n = int(vis.sum())
    if n == 0:
        return AlignmentScore(name, float("nan"), float("nan"), 0)
    ok = correct_keypoints(keypoints_2d[vis], gt[vis], bbox_size, (alpha,), comparison)[0]
    ok_sw = correct_keypoints(keypoints_2d[swap][vis], gt[vis], bbox_size, (alpha,),
                              comparison)[0]
    return AlignmentScore(name, float(ok.double().mean()), float(ok_sw.double().mean()), n)


def partner_misses(
    pred: torch.Tensor,
    gt: torch.Tensor,
    partner_gt: torch.Tensor,
    bbox_size: float,
    alpha: float = 0.1,
    comparison: str = "<=",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which predictions are right, and which misses land on the keypoint's left/right partner.

    With mirror-symmetric descriptors a transfer can be right in every respect but the side: it
    finds the partner. Counting those misses apart from the others tells a labelling problem
    (the mirror twin) from a localisation one.

    Args:
        pred, gt: ``[N x 2]`` predicted and annotated target pixels.
        partner_gt: ``[N x 2]`` the annotated target pixels of each keypoint's partner; NaN
            where the keypoint has no partner or the partner is not annotated.
        bbox_size, alpha, comparison: as :func:`correct_keypoints`.
    Returns:
        ``(correct [N], at_partner [N])`` bool; a correct prediction never counts as at the
        partner.
    """
    if not pred.shape == gt.shape == partner_gt.shape:
        raise ValueError(f"{tuple(pred.shape)} predictions, {tuple(gt.shape)} annotations and "
                         f"{tuple(partner_gt.shape)} partner annotations must all be [N x 2]")
    ok = correct_keypoints(pred, gt, bbox_size, (alpha,), comparison)[0]
    near = correct_keypoints(pred, partner_gt, bbox_size, (alpha,), comparison)[0]
    return ok, near & ~ok
