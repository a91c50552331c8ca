"""Stable Diffusion 1.5 decoder features s3/s4/s5 as GeoAware-SC extracts them (method.md §2.2).

GeoAware-SC does not call Stable Diffusion directly: it runs ODISE's wrapper of SD-1.5
(``model_utils/extractor_sd.py: load_model(diffusion_ver='v1-5', image_size=960,
num_timesteps=50, block_indices=(2, 5, 8, 11))`` with the trained ``Panoptic/odise_label_coco_50e``
config and checkpoint). What that wrapper does, and what this module reproduces:

1. **Slide inference.** ODISE's backbone (``odise/modeling/backbone/feature_extractor.py``,
   ``slide_forward`` with ``backbone_in_size=(512, 512)``, ``slide_training=True``) cuts the
   960 px input into 512 px crops at offsets 0 and 448 per axis (4 crops), runs each crop alone
   and averages the feature maps where crops overlap (``EncoderConfig.sd_window``).
2. **Latent.** Pixels in [0, 1] -> ``2x - 1`` -> VAE posterior *mean* x 0.18215 (no sampling).
3. **Noise.** One fixed noise tensor ``randn(1, 4, 64, 64)`` from a CPU generator seeded with 42
   (``LdmExtractor(share_noise=True)``), bicubic-resized if the latent is not 64 x 64, mixed in
   with the LDM linear schedule (betas ``linspace(0.00085**.5, 0.012**.5, 1000)**2``) at t = 50.
4. **Conditioning** (``odise/modeling/meta_arch/ldm.py: LdmImplicitCaptionerExtractor``): NOT a
   plain empty prompt. The CLIP ViT-L/14-336 image embedding ``e`` of each crop is projected by
   trained layers and added to the empty-prompt text embedding and to the time embedding::

       context = text("") + tanh(alpha_cond) * (W_c e + b_c + P_c)          # [77 x 768]
       temb    = time_embed(t) + tanh(alpha_t) * (W_t e + b_t + P_t)[0]     # [1280]

   These weights live only in ODISE's checkpoint ``odise_label_coco_50e-b67d2efc.pth``; set
   ``EncoderConfig.sd_captioner_checkpoint`` to it (and ``sd_clip_model`` to the CLIP tower) to get
   GeoAware's features. **Fallback without it: the plain empty prompt** (equal to ODISE with
   ``alpha = 0``); features then differ from GeoAware's and the released aggregation network
   (trained on captioned features) sees shifted inputs.
5. **Blocks.** ``unet_block_indices=(2, 5, 8, 11)`` with ``decoder_only=True`` record the *input*
   of LDM ``output_blocks[i]`` before its skip concatenation, i.e. the output of
   ``output_blocks[i - 1]``; the backbone's ``single_forward(raw=True)`` names them
   ``s5 = features[2]`` (1280 ch, 1/64), ``s4 = features[3]`` (1280 ch, 1/32),
   ``s3 = features[4]`` (640 ch, 1/16), ``s2`` (320 ch, unused). In diffusers that is the output
   of the 2nd layer (resnet 1 + attention 1) of ``up_blocks[0]``, ``[1]`` and ``[2]``.
   Sources: Junyi42/sd-dino ``third_party/ODISE/odise/modeling/meta_arch/ldm.py``
   (``LdmExtractor.unet_forward``, ``reset_dim_stride``) and
   ``third_party/ODISE/odise/modeling/backbone/feature_extractor.py`` (``single_forward``,
   ``slide_forward``); GeoAware-SC ``preprocess_map.py`` (960 px, ``num_timesteps=50``).

Remaining differences to GeoAware's files: the PIL-Lanczos resize of the input (ours: padding,
then antialiased bilinear), the CLIP resize (ours: bicubic without antialias, as torchvision 0.14's
tensor ``Resize``), library numerics (diffusers vs ldm, transformers vs open_clip), and the
captioner fallback above when ODISE's checkpoint is not given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semalign3d.config import EncoderConfig
from semalign3d.data.records import AnnotatedImage
from semalign3d.models import runtime
from semalign3d.models.base import DescriptorMap
from semalign3d.models.weights import (
    ModelUnavailableError,
    fingerprint,
    load_checkpoint,
    load_pretrained,
)

#: ODISE's latent-diffusion schedule ("ldm_linear", 1000 steps).
LDM_BETA_START, LDM_BETA_END, LDM_STEPS = 0.00085, 0.012, 1000
#: side of ODISE's shared noise (SD-1.x latent at 512 px); other latent sizes resize it.
SHARED_NOISE_SIZE = 64
#: OpenAI CLIP pixel statistics (open_clip's preprocess for ViT-L-14-336).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: SD feature groups in GeoAware's order, each with its up-block index (see module docstring).
SD_LEVELS = {"s3": 2, "s4": 1, "s5": 0}
ODISE_CHECKPOINT_URL = (
    "https://github.com/NVlabs/ODISE/releases/download/v1.0.0/odise_label_coco_50e-b67d2efc.pth"
)


def default_conf() -> EncoderConfig:
    """GeoAware's SD setting: SD-1.5, 960 px in 512 px windows, t = 50, seed 42 -> 3200 ch."""
    return EncoderConfig(name="sd")


def ldm_alphas_cumprod(steps: int = LDM_STEPS) -> torch.Tensor:
    """``[steps]`` float64 cumulative products of ``1 - beta`` of the LDM linear schedule."""
    betas = torch.linspace(LDM_BETA_START**0.5, LDM_BETA_END**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def shared_noise(seed: int, channels: int, size: int) -> torch.Tensor:
    """ODISE's fixed noise ``[1 x channels x size x size]`` (CPU generator, 64 x 64, bicubic)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, channels, SHARED_NOISE_SIZE, SHARED_NOISE_SIZE, generator=gen)
    if size != SHARED_NOISE_SIZE:
        noise = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    return noise


def window_origins(side: int, window: int) -> list[int]:
    """Crop origins of ODISE's slide inference along one axis (``window <= 0``: one crop).

    ``window_origins(960, 512) == [0, 448]``: fixed stride ``window``, last crop flush right."""
    if window <= 0 or window >= side:
        return [0]
    n = (side - 1) // window + 1
    return [max(min(i * window + window, side) - window, 0) for i in range(n)]


class PositionalLinear(nn.Module):
    """``Linear(x)[:, None] + P``: ODISE's projection of one embedding to a token sequence."""

    def __init__(self, in_features: int, out_features: int, seq_len: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.positional_embedding = nn.Parameter(torch.zeros(1, seq_len, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B x in]`` -> ``[B x seq_len x out]``."""
        return self.linear(x)[:, None] + self.positional_embedding


class ImplicitCaptioner(nn.Module):
    """ODISE's trained map from a CLIP image embedding to SD conditioning offsets.

    Parameter names equal ODISE's (``backbone.feature_extractor.<name>`` in its checkpoint)."""

    def __init__(self, clip_dim: int, text_len: int, text_dim: int, time_dim: int):
        super().__init__()
        self.clip_project = PositionalLinear(clip_dim, text_dim, text_len)
        self.alpha_cond = nn.Parameter(torch.zeros(1, text_len, text_dim))
        self.time_embed_project = PositionalLinear(clip_dim, time_dim, 1)
        self.alpha_cond_time_embed = nn.Parameter(torch.zeros(time_dim))

    def forward(self, image_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image_embed: [B x D]`` -> offsets: context ``[B x L x Dt]``, time ``[B x T]``."""
        context = torch.tanh(self.alpha_cond) * self.clip_project(image_embed)
        time = torch.tanh(self.alpha_cond_time_embed) * self.time_embed_project(image_embed)[:, 0]
        return context, time


_CAPTIONER_KEYS = (
    "clip_project.linear.weight",
    "clip_project.linear.bias",
    "clip_project.positional_embedding",
    "alpha_cond",
    "time_embed_project.linear.weight",
    "time_embed_project.linear.bias",
    "time_embed_project.positional_embedding",
    "alpha_cond_time_embed",
)


def load_implicit_captioner(path: str) -> ImplicitCaptioner:
    """The implicit captioner from ODISE's ``odise_label_coco_50e-b67d2efc.pth`` (or any file whose
    state dict holds its 8 tensors, with or without the ``backbone.feature_extractor.`` prefix)."""
    file, data = load_checkpoint(
        path,
        what="ODISE's implicit captioner",
        option="encoder.sd_captioner_checkpoint / --captioner-checkpoint",
        source=ODISE_CHECKPOINT_URL,
        hint=' If it is the trusted ODISE release, extract the captioner once with: python -c "'
        "import torch; m=torch.load('IN', weights_only=False)['model']; torch.save({k: v for k, "
        "v in m.items() if 'feature_extractor.' in k and 'ldm_extractor' not in k}, 'OUT')\"",
    )
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ModelUnavailableError(f"{file}: expected a state dict, got {type(data).__name__}")
    found = {}
    for key in _CAPTIONER_KEYS:
        hits = [k for k in state if k == key or k.endswith("." + key)]
        hits = [k for k in hits if "ldm_extractor" not in k]
        if len(hits) == 1:
            found[key] = state[hits[0]]
    missing = [k for k in _CAPTIONER_KEYS if k not in found]
    if missing:
        raise ModelUnavailableError(f"{file}: not an ODISE captioner checkpoint; missing {missing}")
    text_len, text_dim = found["alpha_cond"].shape[1:]
    time_dim, clip_dim = found["time_embed_project.linear.weight"].shape
    net = ImplicitCaptioner(int(clip_dim), int(text_len), int(text_dim), int(time_dim))
    try:
        net.load_state_dict(found, strict=True)
    except RuntimeError as e:
        raise ModelUnavailableError(f"{file}: captioner tensors have unexpected shapes: {e}") from e
    return net.eval().requires_grad_(False)


@torch.no_grad()
def empty_prompt(tokenizer, text_encoder) -> torch.Tensor:
    """``[1 x L x D]``: last hidden state of the padded ``""`` (LDM's FrozenCLIPEmbedder)."""
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    )
    return text_encoder.eval()(ids.input_ids)[0].float()


class StableDiffusionFeatures:
    """Raw SD decoder features s3/s4/s5 of square images, GeoAware/ODISE style.

    Args:
        cfg: ``sd_model``, ``sd_timestep``, ``sd_window``, ``seed``, ``sd_captioner_checkpoint``,
            ``sd_clip_model`` are used.
        unet, vae: diffusers ``UNet2DConditionModel`` and ``AutoencoderKL`` (see :meth:`load`).
        empty_prompt: ``[1 x 77 x D]`` text embedding of the padded empty prompt.
        device, dtype: where and in which precision to run (autocast for reduced dtypes).
        captioner, clip: ODISE's implicit captioner and its CLIP image tower (both or neither).

    :meth:`cache_key` describes ``cfg``: pass components loaded from it (as :meth:`load` does).
    """

    def __init__(
        self,
        cfg: EncoderConfig,
        unet,
        vae,
        empty_prompt: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        captioner: ImplicitCaptioner | None = None,
        clip=None,
    ):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self._check_unet(unet)
        if (captioner is None) != (clip is None):
            raise ValueError("the implicit captioner needs its CLIP image tower and vice versa")
        channels_last = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.unet = unet.eval().requires_grad_(False).to(device, memory_format=channels_last)
        self.vae = vae.eval().requires_grad_(False).to(device, memory_format=channels_last)
        self.empty_prompt = empty_prompt.float().to(device)
        self.vae_stride = 2 ** (len(vae.config.block_out_channels) - 1)
        n_up = len(unet.up_blocks)
        self.strides = {k: self.vae_stride * 2 ** (n_up - 1 - i) for k, i in SD_LEVELS.items()}
        rev = list(reversed(unet.config.block_out_channels))
        self.channels = {k: int(rev[i]) for k, i in SD_LEVELS.items()}
        if not 0 <= cfg.sd_timestep < LDM_STEPS:
            raise ValueError(f"sd_timestep={cfg.sd_timestep} outside 0..{LDM_STEPS - 1}")
        ac = ldm_alphas_cumprod()[cfg.sd_timestep]
        self.signal, self.noise_scale = float(ac**0.5), float((1 - ac) ** 0.5)
        self.latent_channels = int(vae.config.latent_channels)
        self.scaling = float(vae.config.scaling_factor)
        self._noise: dict[int, torch.Tensor] = {}
        self.captioner, self.clip = captioner, clip
        if captioner is not None:
            self.captioner = captioner.eval().requires_grad_(False).to(device)
            self.clip = clip.eval().requires_grad_(False).to(device)
            self._check_captioner()

    @classmethod
    def load(cls, cfg: EncoderConfig, device: torch.device, dtype: torch.dtype):
        """Loads ``cfg.sd_model`` (unet, vae, tokenizer, text_encoder subfolders) and, when
        configured, the implicit captioner and its CLIP tower."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        load = dict(
            what="Stable Diffusion",
            option="encoder.sd_model / --sd-model",
            include=("unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "model_index.json"),
        )
        spec = cfg.sd_model
        unet = load_pretrained(UNet2DConditionModel.from_pretrained, spec, subfolder="unet", **load)
        vae = load_pretrained(AutoencoderKL.from_pretrained, spec, subfolder="vae", **load)
        tok = load_pretrained(CLIPTokenizer.from_pretrained, spec, subfolder="tokenizer", **load)
        text = load_pretrained(
            CLIPTextModel.from_pretrained, spec, subfolder="text_encoder", **load
        )
        captioner = clip = None
        if cfg.sd_captioner_checkpoint is not None:
            from transformers import CLIPVisionModelWithProjection

            captioner = load_implicit_captioner(cfg.sd_captioner_checkpoint)
            clip = load_pretrained(
                CLIPVisionModelWithProjection.from_pretrained,
                cfg.sd_clip_model,
                what="the CLIP image tower of ODISE's implicit captioner",
                option="encoder.sd_clip_model / --clip-model",
            )
        return cls(cfg, unet, vae, empty_prompt(tok, text), device, dtype, captioner, clip)

    def _check_unet(self, unet) -> None:
        c = unet.config
        unsupported = {
            "class_embed_type": c.class_embed_type,
            "addition_embed_type": c.addition_embed_type,
            "encoder_hid_dim_type": c.encoder_hid_dim_type,
        }
        bad = {k: v for k, v in unsupported.items() if v is not None}
        if bad or len(unet.up_blocks) < 3 or any(len(b.resnets) < 2 for b in unet.up_blocks[:3]):
            raise ValueError(
                f"{self.cfg.sd_model}: not an SD-1.x style UNet (needs >= 3 up blocks with >= 2 "
                f"layers and no extra embeddings; got {bad or 'too few up-block layers'})"
            )

    def _check_captioner(self) -> None:
        cap, text_len, text_dim = self.captioner, *self.empty_prompt.shape[1:]
        tdim = self.unet.time_embedding.linear_2.out_features
        if (
            tuple(cap.alpha_cond.shape[1:]) != (text_len, text_dim)
            or cap.alpha_cond_time_embed.shape[0] != tdim
            or cap.clip_project.linear.in_features != self.clip.config.projection_dim
        ):
            raise ValueError(
                f"{self.cfg.sd_captioner_checkpoint}: captioner sizes {tuple(cap.alpha_cond.shape)}"
                f"/{cap.alpha_cond_time_embed.shape[0]} do not fit the SD text embedding "
                f"{(text_len, text_dim)}, time embedding {tdim} or CLIP dim "
                f"{self.clip.config.projection_dim}"
            )

    @property
    def step(self) -> int:
        """Input sides (and windows) must be multiples of this (the coarsest feature stride)."""
        return self.strides["s5"]

    def cache_key(self) -> str:
        c = self.cfg
        parts = [fingerprint(c.sd_model, s) for s in ("unet", "vae", "text_encoder", "tokenizer")]
        cap = "none"
        if c.sd_captioner_checkpoint is not None:
            cap = f"{fingerprint(c.sd_captioner_checkpoint)}+{fingerprint(c.sd_clip_model)}"
        return f"sd:{'/'.join(parts)}:t{c.sd_timestep}:w{c.sd_window}:seed{c.seed}:cap={cap}"

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Slide-window features of square images.

        Args:
            pixels: ``[B x 3 x S x S]`` in ``[0, 1]``; ``S``, window: multiples of :attr:`step`.
        Returns:
            ``{"s3", "s4", "s5"}`` float32 ``[B x C_k x S/stride_k x S/stride_k]``.
        """
        b, _, s, s2 = pixels.shape
        window = min(self.cfg.sd_window, s) if self.cfg.sd_window > 0 else s
        if s != s2 or s % self.step or window % self.step:
            raise ValueError(
                f"SD input {s}x{s2} / window {window}: need a square with sides multiples of "
                f"{self.step}"
            )
        origins = window_origins(s, window)
        crops = torch.stack(
            [pixels[:, :, y : y + window, x : x + window] for y in origins for x in origins], 1
        ).flatten(0, 1)  # [B*n*n x 3 x window x window], crops of one image consecutive
        if self.device.type == "cuda":  # the conv weights are channels-last there
            crops = crops.contiguous(memory_format=torch.channels_last)
        feats = self._crop_features(crops.to(self.device))
        out = {}
        n = len(origins)
        for k, f in feats.items():
            st = self.strides[k]
            f = f.unflatten(0, (b, n * n))
            acc = f.new_zeros(b, f.shape[2], s // st, s // st)
            count = f.new_zeros(1, 1, s // st, s // st)
            cw = window // st
            for i, (y, x) in enumerate((y, x) for y in origins for x in origins):
                acc[:, :, y // st : y // st + cw, x // st : x // st + cw] += f[:, i]
                count[:, :, y // st : y // st + cw, x // st : x // st + cw] += 1
            out[k] = acc / count
        return out

    def _crop_features(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        """``crops: [N x 3 x w x w]`` in [0, 1] -> s3/s4/s5 of each crop (float32)."""
        with runtime.autocast(self.device, self.dtype):
            latent = self.vae.encode(crops * 2.0 - 1.0).latent_dist.mean * self.scaling
            size = latent.shape[-1]
            if size not in self._noise:
                noise = shared_noise(self.cfg.seed, self.latent_channels, size)
                self._noise[size] = noise.to(self.device)
            noisy = self.signal * latent + self.noise_scale * self._noise[size].to(latent.dtype)
            context = self.empty_prompt.expand(len(crops), -1, -1)
            time_offset = None
            if self.captioner is not None:
                dctx, time_offset = self.captioner(self._clip_embed(crops))
                context = context + dctx
            return self._unet_features(noisy, context, time_offset)

    def _clip_embed(self, crops: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings ``[N x D]`` as ODISE's ClipAdapter computes them."""
        side = self.clip.config.image_size
        x = F.interpolate(crops, size=(side, side), mode="bicubic", align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return self.clip(pixel_values=(x - mean) / std).image_embeds.float()

    def _unet_features(
        self, sample: torch.Tensor, context: torch.Tensor, time_offset: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """Run the UNet only as far as s3 and record s5/s4/s3 (module docstring, item 5)."""
        unet = self.unet
        t = torch.full((len(sample),), self.cfg.sd_timestep, device=sample.device)
        emb = unet.time_embedding(unet.time_proj(t).to(sample.dtype))
        if time_offset is not None:
            emb = emb + time_offset.to(emb.dtype)
        h = unet.conv_in(sample)
        skips = [h]
        for down in unet.down_blocks:
            if getattr(down, "has_cross_attention", False):
                h, res = down(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, res = down(hidden_states=h, temb=emb)
            skips += list(res)
        h = unet.mid_block(h, emb, encoder_hidden_states=context)
        names = {i: k for k, i in SD_LEVELS.items()}
        feats: dict[str, torch.Tensor] = {}
        for i in range(len(names)):
            up = unet.up_blocks[i]
            attentions = getattr(up, "attentions", None)
            for j, resnet in enumerate(up.resnets):
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
                if attentions is not None:
                    h = attentions[j](h, encoder_hidden_states=context, return_dict=False)[0]
                if j == 1:
                    feats[names[i]] = h.float()
                    if len(feats) == len(names):
                        return feats  # later layers cannot change what was recorded
            for upsampler in up.upsamplers or []:
                h = upsampler(h, skips[-1].shape[-2:])
        raise RuntimeError("unreachable: the UNet has fewer up blocks than checked at load")


def concat_sd(feats: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """``[s3, s4, s5]`` (GeoAware's order) resized bilinearly: ``[B x 3200 x size x size]``."""
    return torch.cat([runtime.to_grid(feats[k], size) for k in ("s3", "s4", "s5")], dim=1)


class SDEncoder:
    """Unit-norm SD descriptors: ``[s3, s4, s5]`` concatenated (3200 ch for SD-1.5), L2-normed."""

    name = "sd"

    def __init__(self, cfg: EncoderConfig, sd: StableDiffusionFeatures | None = None):
        """Loads ``cfg.sd_model`` unless ready ``sd`` features are given."""
        self.cfg = cfg
        self.device = runtime.resolve_device(cfg.device)
        self.dtype = runtime.resolve_dtype(cfg.dtype, self.device)
        self.batch_size = cfg.batch_size
        self.sd = sd or StableDiffusionFeatures.load(cfg, self.device, self.dtype)

    def encode(self, images: Sequence[AnnotatedImage]) -> list[DescriptorMap]:
        """Descriptor maps of ``images`` (flipped records are encoded mirrored)."""
        out: list[DescriptorMap] = []
        for sl in runtime.batches(len(images), self.batch_size):
            (pixels,), sizes = runtime.load_square_batch(
                images[sl], (self.cfg.sd_resolution,), self.device
            )
            feats = F.normalize(concat_sd(self.sd(pixels), self.cfg.grid_size), dim=1)
            feats = runtime.check_finite(feats, self.name, self.dtype).cpu()
            grids = runtime.descriptor_grids(sizes, self.cfg.grid_size)
            out += [DescriptorMap(f, g) for f, g in zip(feats, grids, strict=True)]
        return out

    def cache_key(self) -> str:
        c = self.cfg
        return f"sd-v1|{self.sd.cache_key()}|res{c.sd_resolution}|grid{c.grid_size}|{self.dtype}"
