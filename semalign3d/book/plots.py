"""Matplotlib helpers shared by the chapters: images with keypoints, pairs, flow diagrams.

Images are ``[3 x H x W]`` uint8 tensors (as :func:`semalign3d.data.spair.load_rgb` returns)
or ``[H x W x 3]`` numpy arrays; keypoints are ``[K x 2]`` pixel ``(x, y)``, NaN rows for
invisible ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

#: colours of correct / wrong matches (the paper's green and red lines)
CORRECT, WRONG = "#2ca02c", "#d62728"


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[3 x H x W]`` tensor (the loaders' layout) or ``[H x W x 3]`` array -> ``[H x W x 3]``."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a [3 x H x W] tensor, got {tuple(image.shape)}")
        return image.detach().cpu().permute(1, 2, 0).numpy()
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an [H x W x 3] array, got {a.shape}")
    return a


def _np(points: torch.Tensor | np.ndarray) -> np.ndarray:
    a = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    return a.reshape(-1, 2).astype(float)


def keypoint_colors(k: int) -> np.ndarray:
    """``[k x 4]`` RGBA: one stable colour per keypoint id (tab20 then tab20b, cycled)."""
    palette = np.concatenate([plt.get_cmap("tab20").colors, plt.get_cmap("tab20b").colors])
    rgb = palette[np.arange(k) % len(palette)]
    return np.concatenate([rgb, np.ones((k, 1))], axis=1)


def side_by_side(
    a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, gap: int = 10
) -> tuple[np.ndarray, int]:
    """``a`` and ``b`` on one white ``[max(Ha, Hb) x (Wa + gap + Wb) x 3]`` canvas, top-aligned;
    also returns ``b``'s x offset."""
    a, b = to_hwc(a), to_hwc(b)
    h = max(a.shape[0], b.shape[0])
    off = a.shape[1] + gap
    canvas = np.full((h, off + b.shape[1], 3), 255, dtype=np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], off:] = b
    return canvas, off


def show_keypoints(
    ax: Axes,
    image: torch.Tensor | np.ndarray,
    keypoints: torch.Tensor | np.ndarray,
    *,
    bbox: Sequence[float] | None = None,
    ids: bool = True,
    title: str | None = None,
    size: float = 30.0,
) -> None:
    """The image with its visible keypoints coloured (and labelled) by id, and the bbox."""
    ax.imshow(to_hwc(image))
    kps = _np(keypoints)
    colors = keypoint_colors(len(kps))
    vis = ~np.isnan(kps[:, 0])
    ax.scatter(kps[vis, 0], kps[vis, 1], s=size, c=colors[vis], edgecolors="white",
               linewidths=0.8, zorder=3)
    if ids:
        for k in np.flatnonzero(vis):
            ax.annotate(str(k), kps[k], xytext=(3, 3), textcoords="offset points", fontsize=7,
                        color="white", bbox={"boxstyle": "round,pad=0.1", "fc": colors[k],
                                             "ec": "none", "alpha": 0.8})
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5,
                               ls="--"))
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def show_pair(
    ax: Axes,
    source: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    src_kps: torch.Tensor | np.ndarray,
    trg_kps: torch.Tensor | np.ndarray,
    *,
    ids: Sequence[int] | None = None,
    correct: Sequence[bool] | np.ndarray | None = None,
    title: str | None = None,
    gap: int = 10,
) -> None:
    """Source and target side by side with a line per correspondence ``[N x 2]``-``[N x 2]``.

    Lines are coloured by keypoint id (``ids``), or green/red when ``correct`` is given.
    """
    canvas, off = side_by_side(source, target, gap)
    s, t = _np(src_kps), _np(trg_kps)
    if len(s) != len(t):
        raise ValueError(f"{len(s)} source but {len(t)} target keypoints")
    ax.imshow(canvas)
    ids = list(ids) if ids is not None else list(range(len(s)))
    palette = keypoint_colors(max(ids, default=0) + 1)
    for n, k in enumerate(ids):
        if np.isnan(s[n]).any() or np.isnan(t[n]).any():
            continue
        color = palette[k] if correct is None else (CORRECT if correct[n] else WRONG)
        ax.plot([s[n, 0], t[n, 0] + off], [s[n, 1], t[n, 1]], "-o", color=color, lw=1.2,
                ms=3.5, mec="white", mew=0.6)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def flow_diagram(
    ax: Axes,
    boxes: dict[str, tuple[float, float, str]],
    arrows: Sequence[tuple[str, str] | tuple[str, str, str]],
    *,
    width: float = 0.17,
    height: float = 0.12,
    colors: dict[str, str] | None = None,
) -> None:
    """Boxes ``name -> (x, y, text)`` (centres in axes units 0..1) joined by arrows
    ``(from, to[, label])``."""
    colors = colors or {}
    for name, (x, y, text) in boxes.items():
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0.01,rounding_size=0.02",
                                    fc=colors.get(name, "#eef3fb"), ec="#34495e", lw=1.2))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5, wrap=True)
    for arrow in arrows:
        a, b, label = (*arrow, "")[:3]
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        dx, dy = xb - xa, yb - ya
        # start and end on the box borders: the segment leaves a box at the first border it hits
        tx = (width / 2) / abs(dx) if dx else float("inf")
        ty = (height / 2) / abs(dy) if dy else float("inf")
        f = min(tx, ty, 0.45) + 0.01
        start, end = (xa + dx * f, ya + dy * f), (xb - dx * f, yb - dy * f)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12,
                                     lw=1.2, color="#34495e"))
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.03, label,
                    ha="center", va="bottom", fontsize=7.5, style="italic", color="#34495e")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
