"""Widgets that stay interactive in the static book (no kernel): anywidget with JS-side logic.

Python callbacks cannot run in a published page, so a widget here carries precomputed results
(e.g. one rendered figure per alignment step) and JavaScript only picks which one to show. The
book serves anywidget's front-end locally (see :mod:`semalign3d.book.vendor`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import anywidget
import traitlets
from matplotlib.figure import Figure

_ESM = """
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "s3d-frames";
  const title = document.createElement("div");
  title.className = "s3d-frames-title";
  const img = document.createElement("img");
  const row = document.createElement("div");
  row.className = "s3d-frames-row";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = "0";
  slider.step = "1";
  const label = document.createElement("span");
  label.className = "s3d-frames-label";
  row.append(slider, label);
  root.append(title, img, row);
  el.append(root);

  const update = () => {
    const frames = model.get("frames");
    const labels = model.get("labels");
    const i = Math.max(0, Math.min(model.get("index"), frames.length - 1));
    slider.max = String(Math.max(frames.length - 1, 0));
    slider.value = String(i);
    img.src = frames[i] || "";
    img.alt = labels[i] || "";
    label.textContent = labels[i] || `${i + 1} / ${frames.length}`;
    title.textContent = model.get("title");
  };
  slider.addEventListener("input", () => {
    model.set("index", Number(slider.value));
    model.save_changes();
  });
  for (const name of ["index", "frames", "labels", "title"]) {
    model.on(`change:${name}`, update);
  }
  update();
}
export default { render };
"""

_CSS = """
.s3d-frames { font-family: sans-serif; max-width: 100%; }
.s3d-frames img { max-width: 100%; display: block; }
.s3d-frames-title { font-weight: 600; margin-bottom: 0.3em; }
.s3d-frames-row { display: flex; align-items: center; gap: 0.8em; margin-top: 0.3em; }
.s3d-frames-row input { flex: 1; }
.s3d-frames-label { min-width: 12em; font-size: 0.9em; }
"""


class FrameViewer(anywidget.AnyWidget):
    """One of several precomputed images, chosen with a slider; works without a kernel.

    Attributes:
        frames: image data URLs (``figure_data_url``), one per slider position.
        labels: caption per frame (defaults to ``"i / n"``).
        index: the frame shown.
        title: a heading above the image.
    """

    _esm = _ESM
    _css = _CSS
    frames = traitlets.List(traitlets.Unicode()).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    index = traitlets.Int(0).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)


def figure_data_url(fig: Figure, dpi: int = 80) -> str:
    """``data:image/png;base64,...`` of a matplotlib figure (the figure is left open)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def frame_viewer(
    frames: Sequence[str], labels: Sequence[str] | None = None, title: str = "", index: int = 0
) -> FrameViewer:
    """A :class:`FrameViewer` over data-URL ``frames`` (one label per frame if given)."""
    if not frames:
        raise ValueError("frame_viewer needs at least one frame")
    if labels is not None and len(labels) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(labels)} labels")
    if not 0 <= index < len(frames):
        raise ValueError(f"index {index} outside 0..{len(frames) - 1}")
    return FrameViewer(frames=list(frames), labels=list(labels or []), index=index, title=title)
