"""Figures of matches, alignments and energy traces (used by ``semalign3d match`` and the book).

Every function returns a matplotlib Figure and never shows or saves it; the caller decides.
Images are ``[3 x H x W]`` uint8 tensors (``semalign3d.data.spair.load_rgb``).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are saved, never shown by this module
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from semalign3d.align.optimize import Alignment  # noqa: E402


def _hwc(image: torch.Tensor):
    return image.permute(1, 2, 0).cpu().numpy()


def match_figure(
    src_image: torch.Tensor,
    trg_image: torch.Tensor,
    src_kps: torch.Tensor,
    pred: torch.Tensor,
    gt: torch.Tensor | None = None,
    threshold: float | None = None,
    title: str = "",
) -> Figure:
    """Side-by-side images with a line from each source keypoint to its prediction.

    Args:
        src_image, trg_image: ``[3 x H x W]`` uint8.
        src_kps, pred: ``[N x 2]`` pixels in the source / target image.
        gt: optional ``[N x 2]`` target ground truth; with ``threshold`` (pixels) lines are
            green (o-o, correct) or red (x-x, wrong), as in the paper's Figs. 9-10.
        title: figure title.
    """
    h1, w1 = src_image.shape[-2:]
    h2, w2 = trg_image.shape[-2:]
    h = max(h1, h2)
    canvas = torch.zeros(3, h, w1 + w2, dtype=torch.uint8)
    canvas[:, :h1, :w1] = src_image
    canvas[:, :h2, w1:] = trg_image
    fig, ax = plt.subplots(figsize=(10, 10 * h / (w1 + w2) + 0.5))
    ax.imshow(_hwc(canvas))
    ok = None
    if gt is not None and threshold is not None:
        ok = (pred.double() - gt.double()).norm(dim=-1) <= threshold
    for i in range(src_kps.shape[0]):
        (x1, y1), (x2, y2) = src_kps[i].tolist(), pred[i].tolist()
        color = "yellow" if ok is None else ("lime" if ok[i] else "red")
        marker = "o" if ok is None or ok[i] else "x"
        ax.plot([x1, x2 + w1], [y1, y2], "-", color=color, lw=1.2, marker=marker, ms=5)
    if ok is not None:
        title = f"{title}  {int(ok.sum())}/{len(ok)} correct".strip()
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


def alignment_overlay(
    image: torch.Tensor,
    alignment: Alignment,
    dense_points: torch.Tensor | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Figure:
    """Projected model points over the image.

    Args:
        image: ``[3 x H x W]`` uint8.
        alignment: the fitted representation (keypoints are drawn with their index or ``labels``).
        dense_points: optional ``[N x 3]`` camera-frame dense points to project and draw.
    """
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[-2] / image.shape[-1] + 0.4))
    ax.imshow(_hwc(image))
    if dense_points is not None:
        d = alignment.project(dense_points.double())
        ax.scatter(d[:, 0], d[:, 1], s=3, c=dense_points[:, 2].cpu(), cmap="viridis", alpha=0.6)
    k = alignment.keypoints_2d
    ax.scatter(k[:, 0], k[:, 1], s=30, c="red", edgecolors="white", linewidths=0.8)
    for i, (x, y) in enumerate(k.tolist()):
        ax.annotate(labels[i] if labels else str(i), (x, y), color="white", fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_title(title or f"{alignment.name}: f = {alignment.focal:.2f}, "
                 f"hypothesis {alignment.hypothesis}")
    ax.set_xlim(0, alignment.width)
    ax.set_ylim(alignment.height, 0)
    ax.axis("off")
    fig.tight_layout()
    return fig


def energy_plot(alignment: Alignment, title: str = "") -> Figure:
    """The total energy and every (unweighted) term of Eq. 13 over the optimisation steps."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    axes[0].plot(alignment.energy.numpy(), color="black")
    axes[0].set_title("L_align (Eq. 13)")
    axes[0].set_xlabel("step")
    for name, trace in alignment.terms.items():
        if torch.any(trace != 0):
            axes[1].plot(trace.numpy(), label=name)
    axes[1].set_title("terms (unweighted)")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    fig.suptitle(title or alignment.name)
    fig.tight_layout()
    return fig
