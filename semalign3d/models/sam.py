"""Segment Anything through transformers' ``SamModel``, with SAM's own pre/post-processing.

SemAlign3D's train masks come from SAM ViT-H (``sam_vit_h_4b8939.pth``, i.e. the HF conversion
``facebook/sam-vit-huge``) prompted with all ground-truth keypoints as positive points, keeping the
third of the three multimask outputs (method.md §2.4). The steps below are those of SAM's
``SamPredictor`` (and transformers' ``SamProcessor``), written in torch + PIL (no torchvision):

1. resize so the longest side is ``image_size`` (1024): PIL bilinear to
   ``(int(h * s + 0.5), int(w * s + 0.5))``;
2. standardise with SAM's pixel mean/std (0..255 units), zero-pad bottom/right to a square;
3. prompts are scaled by the same factors (x by ``new_w / w``, y by ``new_h / h``);
4. low-resolution logits -> bilinear to the padded square -> crop -> bilinear to ``H x W`` ->
   ``> 0``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semalign3d.config import MaskConfig
from semalign3d.models import runtime
from semalign3d.models.weights import fingerprint, load_pretrained

#: SAM's pixel statistics in 0..255 units.
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)


def default_conf() -> MaskConfig:
    """SAM ViT-H (HF conversion of ``sam_vit_h_4b8939.pth``), keypoint prompts, mask index 2."""
    return MaskConfig(train_source="sam_keypoints", sam_model="facebook/sam-vit-huge")


def resized_shape(height: int, width: int, longest: int) -> tuple[int, int]:
    """SAM's ``ResizeLongestSide.get_preprocess_shape``: ``(500, 375), 1024 -> (1024, 768)``."""
    scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class SamPredictor:
    """One image at a time: point and/or box prompts -> masks at image resolution.

    Args:
        model: hub id or local folder of a transformers SAM checkpoint.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    def __init__(self, model: str, device: str = "auto"):
        from transformers import SamModel

        self.device = runtime.resolve_device(device)
        net = load_pretrained(
            SamModel.from_pretrained, model, what="Segment Anything", option="masks.sam_model"
        )
        self.net = net.eval().requires_grad_(False).to(self.device)
        self.side = int(net.config.vision_config.image_size)
        self.spec = model

    def preprocess(self, rgb: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``[3 x H x W]`` uint8 -> ``[1 x 3 x side x side]`` input and the resized ``(h, w)``."""
        h, w = rgb.shape[-2:]
        nh, nw = resized_shape(h, w, self.side)
        pil = Image.fromarray(rgb.permute(1, 2, 0).cpu().numpy())
        arr = np.asarray(pil.resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
        x = torch.from_numpy(arr).permute(2, 0, 1)
        x = (x - torch.tensor(SAM_MEAN).view(3, 1, 1)) / torch.tensor(SAM_STD).view(3, 1, 1)
        return F.pad(x, (0, self.side - nw, 0, self.side - nh))[None], (nh, nw)

    @torch.no_grad()  # not inference_mode: callers may use the outputs under autograd
    def predict(
        self,
        rgb: torch.Tensor,
        points: torch.Tensor | None = None,
        box: tuple[float, float, float, float] | None = None,
        multimask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of one image.

        Args:
            rgb: ``[3 x H x W]`` uint8.
            points: ``[N x 2]`` positive points ``(x, y)`` in pixels, or None.
            box: ``(x0, y0, x1, y1)`` in pixels, or None.
            multimask: SAM's three candidate masks (True) or its single best one.
        Returns:
            ``[M x H x W]`` bool masks (M = 3 or 1) and ``[M]`` predicted IoUs, on the CPU.
        """
        if points is None and box is None:
            raise ValueError("SAM needs a point or box prompt")
        h, w = rgb.shape[-2:]
        x, (nh, nw) = self.preprocess(rgb)
        scale = torch.tensor([nw / w, nh / h])
        kwargs = {}
        if points is not None:
            pts = points.float().reshape(-1, 2)
            if len(pts) == 0 or not torch.isfinite(pts).all():
                raise ValueError(f"SAM point prompts must be finite and non-empty, got {pts}")
            kwargs["input_points"] = (pts * scale)[None, None].to(self.device)
            kwargs["input_labels"] = torch.ones(
                1, 1, len(pts), dtype=torch.long, device=self.device
            )
        if box is not None:
            b = torch.tensor(box, dtype=torch.float32).view(2, 2) * scale
            kwargs["input_boxes"] = b.view(1, 1, 4).to(self.device)
        out = self.net(pixel_values=x.to(self.device), multimask_output=multimask, **kwargs)
        logits = out.pred_masks[0, 0].float()  # [M x h' x w']
        logits = F.interpolate(
            logits[None], size=(self.side, self.side), mode="bilinear", align_corners=False
        )[..., :nh, :nw]
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0]
        return (logits > 0).cpu(), out.iou_scores[0, 0].float().cpu()

    def cache_key(self) -> str:
        return f"sam-v1|{fingerprint(self.spec)}"
