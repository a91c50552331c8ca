"""A grid figure of rendered images with their keypoints and mask outlines (for the book)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from semalign3d.data.spair import SPairDataset, load_mask, load_rgb


def preview_grid(
    root: str | Path,
    categories: Sequence[str] | None = None,
    per_category: int = 4,
    split: str = "test",
    label_ids: bool = True,
    out: str | Path | None = None,
):
    """One row per category: images of ``split`` with visible keypoints (coloured by id, labelled
    with the id) and the mask outline.

    Args:
        root: an SPair-layout root (synthetic or real; masks are drawn when present).
        categories: rows; default every category of the root.
        per_category: images per row.
        out: if given, the figure is also saved there (PNG, 100 dpi).
    Returns:
        the matplotlib Figure.
    """
    import matplotlib

    if out is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ds = SPairDataset(root)
    cats = list(categories) if categories is not None else ds.categories
    if not cats:
        raise ValueError(f"{root}: no categories to preview")
    fig, axes = plt.subplots(
        len(cats), per_category, figsize=(3.2 * per_category, 3.2 * len(cats)), squeeze=False
    )
    cmap = plt.get_cmap("tab20")
    for r, cat in enumerate(cats):
        names = ds.split_image_names(split, cat) or ds.train_image_names(cat)
        for c in range(per_category):
            ax = axes[r][c]
            ax.set_axis_off()
            if c >= len(names):
                continue
            img = ds.image(cat, names[c])
            ax.imshow(load_rgb(img).permute(1, 2, 0).numpy())
            mask = load_mask(img)
            if mask is not None:
                ax.contour(mask.numpy().astype(float), levels=[0.5], colors="white", linewidths=0.8)
            kp = img.keypoints.numpy()
            for k in np.nonzero(img.visible.numpy())[0]:
                ax.scatter(
                    kp[k, 0] - 0.5,
                    kp[k, 1] - 0.5,
                    s=18,
                    color=cmap(k % 20),
                    edgecolors="black",
                    linewidths=0.5,
                    zorder=3,
                )
                if label_ids:
                    ax.annotate(
                        str(k),
                        (kp[k, 0] - 0.5, kp[k, 1] - 0.5),
                        fontsize=6,
                        color="white",
                        xytext=(2, 2),
                        textcoords="offset points",
                    )
            ax.set_title(f"{cat} {img.name}", fontsize=8)
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=100)
    return fig
