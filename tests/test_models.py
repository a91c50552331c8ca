"""Real-model wrappers, exercised with tiny random-init models saved and loaded back through the
production loaders (no weights can be downloaded here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from semalign3d.config import DepthConfig, EncoderConfig, MaskConfig, replace
from semalign3d.data.flips import flip_image, num_keypoints
from semalign3d.data.records import AnnotatedImage, DataError
from semalign3d.models import (
    build_depth,
    build_encoder,
    build_masks,
    load_geoaware_aggregation,
    runtime,
)
from semalign3d.models.base import FeatureGrid
from semalign3d.models.weights import ModelUnavailableError, fingerprint, load_pretrained

# tiny sizes with the real structure: SD groups (s3, s4, s5) = (32, 96, 96), DINO 128, projection
# 128 (bottleneck 32 = 128 / 4, GroupNorm 32 groups like GeoAware), so every SD group has a
# projection shortcut and the DINO group an identity one, as in (640, 1280, 1280, 768) -> 768.
DINO_DIM, UNET_CH, TEXT_DIM, CLIP_DIM = 128, (32, 32, 96, 96), 32, 24
SD_RES, SD_WINDOW, GRID = 128, 64, 8
MISSING_ID = "semalign3d-tests/no-such-model"  # never in any cache, so the test is hermetic


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP barriers
    across busy cores slow them down tenfold; restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- tiny models
def save_tiny_dinov2(path: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=DINO_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=28,
        patch_size=14,
    )
    Dinov2Model(cfg).save_pretrained(path)
    return path


def save_tiny_sd(path: Path) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8,
        block_out_channels=UNET_CH,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    ).save_pretrained(path / "unet")
    AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).save_pretrained(path / "vae")
    CLIPTextModel(
        CLIPTextConfig(
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=100,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).save_pretrained(path / "text_encoder")
    tok_dir = path / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "a</w>": 3}
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(
        str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), pad_token="<|endoftext|>"
    )
    tok.model_max_length = 77
    tok.save_pretrained(tok_dir)
    return path


def save_tiny_clip(path: Path) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=CLIP_DIM,
        )
    ).save_pretrained(path)
    return path


def save_odise_like_checkpoint(path: Path, alpha: float) -> Path:
    """ODISE's layout: ``{"model": {"backbone.feature_extractor.<name>": tensor, ...}}``."""
    from semalign3d.models.sd import ImplicitCaptioner

    torch.manual_seed(1)
    cap = ImplicitCaptioner(CLIP_DIM, 77, TEXT_DIM, UNET_CH[0] * 4)
    for p in cap.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        cap.alpha_cond.fill_(alpha)
        cap.alpha_cond_time_embed.fill_(alpha)
    state = {f"backbone.feature_extractor.{k}": v for k, v in cap.state_dict().items()}
    state["sem_seg_head.predictor.query_embed.weight"] = torch.zeros(3, 2)
    state["backbone.feature_extractor.ldm_extractor.ldm.uncond_inputs"] = torch.zeros(1, 77, 32)
    torch.save({"model": state, "iteration": 92187}, path)
    return path


def save_tiny_aggregation(path: Path) -> Path:
    from semalign3d.models.geoaware import AggregationNetwork

    torch.manual_seed(2)
    net = AggregationNetwork((UNET_CH[1], UNET_CH[3], UNET_CH[3], DINO_DIM), DINO_DIM)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    torch.save(net.state_dict(), path)
    return path


def save_tiny_depth_anything(path: Path) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=28,
        patch_size=14,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
        apply_layernorm=True,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
    )
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    return path


def save_tiny_sam(path: Path) -> Path:
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    torch.manual_seed(0)
    cfg = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=32,
            output_channels=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
            window_size=4,
            global_attn_indexes=[1],
            mlp_dim=64,
            num_pos_feats=8,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16
        ),
    )
    SamModel(cfg).save_pretrained(path)
    return path


def make_image(path: Path, height: int, width: int, seed: int, category: str = "cow"):
    """A random PNG (lossless, so a mirrored copy has exactly mirrored pixels) and its record."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    k = num_keypoints(category)
    kps = torch.full((k, 2), float("nan"))
    kps[0] = torch.tensor([width * 0.3, height * 0.4])
    kps[1] = torch.tensor([width * 0.6, height * 0.5])
    kps[2] = torch.tensor([width * 0.5, height * 0.7])
    return AnnotatedImage(
        name=path.stem,
        category=category,
        path=path,
        width=width,
        height=height,
        bbox=(width * 0.2, height * 0.25, width * 0.8, height * 0.9),
        keypoints=kps,
        visible=~torch.isnan(kps[:, 0]),
    )


def mirrored_copy(image: AnnotatedImage, path: Path) -> AnnotatedImage:
    """The record of a new file holding the mirrored pixels, with the flipped annotation."""
    Image.open(image.path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    flipped = flip_image(image)
    return AnnotatedImage(**{**flipped.__dict__, "path": path, "name": path.stem, "flipped": False})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> types.SimpleNamespace:
    root = tmp_path_factory.mktemp("tiny-models")
    t0 = time.perf_counter()
    ns = types.SimpleNamespace(
        root=root,
        dino=save_tiny_dinov2(root / "dinov2"),
        sd=save_tiny_sd(root / "sd"),
        clip=save_tiny_clip(root / "clip"),
        captioner=save_odise_like_checkpoint(root / "odise.pth", alpha=0.7),
        captioner_off=save_odise_like_checkpoint(root / "odise0.pth", alpha=0.0),
        aggregation=save_tiny_aggregation(root / "best_tiny.PTH"),
        depth=save_tiny_depth_anything(root / "depth"),
        sam=save_tiny_sam(root / "sam"),
        wide=make_image(root / "img" / "wide.png", 30, 52, seed=0),
        tall=make_image(root / "img" / "tall.png", 45, 28, seed=1),
    )
    ns.build_s = time.perf_counter() - t0
    ns.cfg = EncoderConfig(
        name="dinov2",
        dinov2_model=str(ns.dino),
        dinov2_layer=1,
        dinov2_resolution=GRID * 14,
        sd_model=str(ns.sd),
        sd_resolution=SD_RES,
        sd_window=SD_WINDOW,
        geoaware_checkpoint=str(ns.aggregation),
        grid_size=GRID,
        batch_size=2,
        device="cpu",
        dtype="float32",
    )
    return ns


# ----------------------------------------------------------------------------- package
def test_importing_models_loads_no_heavy_library():
    code = (
        "import sys, semalign3d.models, semalign3d.models.cache, semalign3d.models.weights;"
        "bad = [m for m in ('transformers', 'diffusers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_needs_root_for_dataset_backed_models():
    with pytest.raises(ValueError, match="dataset root"):
        build_encoder(EncoderConfig(name="oracle"))
    with pytest.raises(ValueError, match="dataset root"):
        build_depth(DepthConfig(name="synthetic"))
    with pytest.raises(ValueError, match="unknown mask source"):
        build_masks(MaskConfig(), "magic")


# ----------------------------------------------------------------------------- runtime
def test_square_resize_pads_centred_and_keeps_values():
    rgb = torch.tensor([[[10, 20]], [[30, 40]], [[50, 60]]], dtype=torch.uint8)  # 1 x 2
    out = runtime.square_resize(rgb, 2)
    expected = torch.tensor([[[10, 20], [0, 0]], [[30, 40], [0, 0]], [[50, 60], [0, 0]]]) / 255
    assert torch.allclose(out, expected)
    with pytest.raises(ValueError, match="3 x H x W"):
        runtime.square_resize(torch.zeros(4, 2, 2, dtype=torch.uint8), 2)


def test_square_input_matches_feature_grid_on_non_square_images():
    # a linear ramp survives bilinear resizing, so the network input at a cell centre must
    # equal the image value at the pixel FeatureGrid assigns to that cell
    h, w, side = 40, 100, 50
    x = torch.arange(w).float().expand(h, w)
    rgb = torch.stack([x, x, x]).to(torch.uint8)
    square = runtime.square_resize(rgb, side)
    grid = FeatureGrid(height=h, width=w, h=side, w=side)
    centers = grid.cell_centers().reshape(side, side, 2)
    inside = grid.valid_cells()
    inside[:, [0, -1]] = False  # the ramp's ends touch the resize border
    rows = inside.any(1).nonzero().flatten()[1:-1]  # and the padding border
    sel = inside.clone()
    sel[:] = False
    sel[rows] = inside[rows]
    # pixel index x covers [x, x+1): value x is centred at x + 0.5 in continuous coordinates
    want = centers[..., 0][sel] - 0.5
    got = square[0][sel] * 255
    assert torch.allclose(got, want, atol=0.05), (got - want).abs().max()


def test_device_dtype_and_batches():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert runtime.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        runtime.resolve_dtype("float8", torch.device("cpu"))
    x = torch.ones(2, 2)
    assert runtime.check_finite(x, "e", torch.float32) is x
    with pytest.raises(RuntimeError, match="non-finite.*use bfloat16"):
        runtime.check_finite(torch.tensor([float("nan")]), "e", torch.float16)
    assert runtime.batches(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert runtime.batches(0, 3) == []
    with pytest.raises(ValueError):
        runtime.batches(3, 0)


# ----------------------------------------------------------------------------- weights
def test_missing_hub_model_offline_fails_fast_with_help(monkeypatch):
    from huggingface_hub import constants
    from transformers import Dinov2Model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_pretrained(Dinov2Model.from_pretrained, MISSING_ID, what="DINOv2", option="--dinov2")
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    for needle in (
        MISSING_ID,
        f"hf download {MISSING_ID}",
        str(constants.HF_HUB_CACHE),
        "hf download",
        "HF_HUB_OFFLINE",
        "--dinov2",
        "not contacted",
    ):
        assert needle in msg, needle


def test_missing_local_model_and_checkpoint(tmp_path):
    from semalign3d.models.weights import checkpoint_file

    with pytest.raises(ModelUnavailableError, match="not a local path"):
        load_pretrained(
            lambda *a, **k: None, str(tmp_path / "nope" / "x" / "y"), what="m", option="o"
        )
    with pytest.raises(ModelUnavailableError, match="not configured"):
        checkpoint_file(None, what="ckpt", option="--c", source="somewhere")
    with pytest.raises(ModelUnavailableError, match="is not a file"):
        checkpoint_file(str(tmp_path / "x.pth"), what="ckpt", option="--c", source="somewhere")


def test_fingerprint_follows_file_changes(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    a = fingerprint(str(f))
    assert fingerprint(str(f)) == a
    f.write_bytes(b"abcd")
    assert fingerprint(str(f)) != a
    assert fingerprint(None) == "none"
    assert fingerprint("org/model").startswith("org/model")


# ----------------------------------------------------------------------------- DINOv2
def test_hub_position_interpolation_uses_offset_scale_factor():
    from semalign3d.models.dinov2 import hub_interpolate_pos_encoding

    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 4, 3)
    emb = types.SimpleNamespace(
        position_embeddings=pos, patch_embeddings=types.SimpleNamespace(patch_size=(14, 14))
    )
    out = hub_interpolate_pos_encoding(emb, torch.zeros(1, 1 + 16, 3), 56, 56)
    grid = pos[:, 1:].reshape(1, 2, 2, 3).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(4.1 / 2, 4.1 / 2), mode="bicubic", align_corners=False)
    assert torch.allclose(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 16, 3))
    assert torch.equal(out[:, :1], pos[:, :1])
    plain = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    assert not torch.allclose(ref, plain)  # why the hub rule is installed
    assert hub_interpolate_pos_encoding(emb, torch.zeros(1, 5, 3), 28, 28) is pos


def test_dinov2_encoder_shapes_grid_norm_and_layer(tiny):
    from semalign3d.models.dinov2 import DinoV2Encoder

    enc = build_encoder(tiny.cfg)
    assert isinstance(enc, DinoV2Encoder)
    maps = enc.encode([tiny.wide, tiny.tall, tiny.wide])
    assert [tuple(m.features.shape) for m in maps] == [(DINO_DIM, GRID, GRID)] * 3
    assert maps[0].grid == FeatureGrid(height=30, width=52, h=GRID, w=GRID)
    assert maps[1].grid == FeatureGrid(height=45, width=28, h=GRID, w=GRID)
    assert torch.allclose(maps[0].features.norm(dim=0), torch.ones(GRID, GRID), atol=1e-5)
    assert torch.equal(maps[0].features, maps[2].features)  # batch-independent
    # the tokens are the raw output of block `layer` (no final LayerNorm), CLS dropped
    from transformers import Dinov2Model

    ref = Dinov2Model.from_pretrained(tiny.dino).eval()
    ref.embeddings.interpolate_pos_encoding = enc.backbone.net.embeddings.interpolate_pos_encoding
    (px,), _ = runtime.load_square_batch([tiny.wide], (GRID * 14,), torch.device("cpu"))
    with torch.no_grad():
        hs = ref(pixel_values=runtime.imagenet_normalize(px), output_hidden_states=True)
    want = F.normalize(hs.hidden_states[2][0, 1:].T.reshape(DINO_DIM, GRID, GRID), dim=0)
    assert torch.allclose(maps[0].features, want, atol=1e-5)
    assert enc.cache_key() != build_encoder(replace(tiny.cfg, dinov2_layer=0)).cache_key()


def test_dinov2_rejects_bad_layer(tiny):
    with pytest.raises(ValueError, match="blocks 0..1"):
        build_encoder(replace(tiny.cfg, dinov2_layer=2))


@pytest.fixture(scope="module")
def geo(tiny):
    """One GeoAware encoder (it loads DINOv2, SD and the aggregation through the loaders)."""
    return build_encoder(replace(tiny.cfg, name="geoaware"))


def test_flip_encoding_equals_encoding_the_flipped_image(tiny, geo, tmp_path):
    mirror = mirrored_copy(tiny.tall, tmp_path / "tall_mirror.png")
    for name, enc in (("dinov2", build_encoder(tiny.cfg)), ("geoaware", geo)):
        (a,), (b,) = enc.encode([flip_image(tiny.tall)]), enc.encode([mirror])
        assert torch.equal(a.features, b.features), name
        assert a.grid == b.grid
        c = enc.encode([tiny.tall])[0]
        assert not torch.allclose(a.features, c.features)  # the flip did change the input


# ----------------------------------------------------------------------------- SD
def test_schedule_noise_and_windows():
    from diffusers import DDPMScheduler

    from semalign3d.models.sd import ldm_alphas_cumprod, shared_noise, window_origins

    ac = ldm_alphas_cumprod()
    assert ac[0].item() == pytest.approx(1 - 0.00085, abs=1e-12)
    ref = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert torch.allclose(ac.float(), ref.alphas_cumprod, atol=1e-6)
    n = shared_noise(42, 4, 64)
    assert torch.equal(n, torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(42)))
    assert shared_noise(42, 4, 8).shape == (1, 4, 8, 8)
    assert window_origins(960, 512) == [0, 448]
    assert window_origins(512, 512) == [0]
    assert window_origins(960, 0) == [0]
    assert window_origins(1024, 512) == [0, 512]
    assert window_origins(1000, 300) == [0, 300, 600, 700]


@pytest.fixture(scope="module")
def sd_features(geo):
    return geo.features.sd


def test_sd_block_outputs_match_diffusers_forward(sd_features):
    # our partial UNet pass must reproduce the hooked block outputs of diffusers' own forward
    unet = sd_features.unet
    torch.manual_seed(0)
    sample = torch.randn(2, 4, 8, 8)
    ctx = torch.randn(2, 77, TEXT_DIM)
    seen = {}

    def keep(name, pick):
        def hook(module, inputs, output):
            seen[name] = pick(output)  # returns None: the forward output is left untouched

        return hook

    ups = unet.up_blocks
    hooks = [
        ups[0].resnets[1].register_forward_hook(keep("s5", lambda o: o)),
        ups[1].attentions[1].register_forward_hook(keep("s4", lambda o: o[0])),
        ups[2].attentions[1].register_forward_hook(keep("s3", lambda o: o[0])),
    ]
    try:
        with torch.no_grad():
            unet(sample, 50, encoder_hidden_states=ctx)
            ours = sd_features._unet_features(sample, ctx, None)
    finally:
        for h in hooks:
            h.remove()
    assert sd_features.channels == {"s3": 32, "s4": 96, "s5": 96}
    for k in ("s3", "s4", "s5"):
        assert torch.allclose(ours[k], seen[k], atol=1e-5), k


def test_sd_slide_windows_average_overlaps(sd_features, tiny):
    torch.manual_seed(0)
    px = torch.rand(1, 3, 192, 192)
    full = sd_features(px)  # window 64 on 192: origins 0, 64, 128 (no overlap)
    assert {k: tuple(v.shape) for k, v in full.items()} == {
        "s3": (1, 32, 12, 12),
        "s4": (1, 96, 6, 6),
        "s5": (1, 96, 3, 3),
    }
    crop = sd_features._crop_features(px[:, :, 64:128, 0:64])
    assert torch.allclose(full["s3"][..., 4:8, 0:4], crop["s3"], atol=1e-5)
    # window 128 on 192: origins 0 and 64 overlap on 64..128 and are averaged there
    sd_features.cfg = replace(tiny.cfg, sd_window=128)
    try:
        avg = sd_features(px)["s3"]
    finally:
        sd_features.cfg = tiny.cfg
    a = sd_features._crop_features(px[:, :, 0:128, 0:128])["s3"]
    b = sd_features._crop_features(px[:, :, 0:128, 64:192])["s3"]
    # rows 0..4 (y < 64) are seen by the top crops only; columns 4..8 by both top crops
    assert torch.allclose(avg[..., 0:4, 0:4], a[..., 0:4, 0:4], atol=1e-5)
    assert torch.allclose(avg[..., 0:4, 4:8], (a[..., 0:4, 4:8] + b[..., 0:4, 0:4]) / 2, atol=1e-5)
    assert torch.allclose(avg[..., 0:4, 8:12], b[..., 0:4, 4:8], atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 64"):
        sd_features(torch.rand(1, 3, 96, 96))


def test_sd_encoder_output(tiny, sd_features):
    from semalign3d.models.sd import SDEncoder

    enc = SDEncoder(replace(tiny.cfg, name="sd"), sd=sd_features)
    maps = enc.encode([tiny.wide, tiny.tall])
    assert [tuple(m.features.shape) for m in maps] == [(32 + 96 + 96, GRID, GRID)] * 2
    assert maps[1].grid == FeatureGrid(height=45, width=28, h=GRID, w=GRID)
    assert torch.allclose(maps[0].features.norm(dim=0), torch.ones(GRID, GRID), atol=1e-5)


def test_odise_captioner_loads_and_conditions(tiny, sd_features):
    from semalign3d.models.sd import StableDiffusionFeatures, load_implicit_captioner

    cap = load_implicit_captioner(str(tiny.captioner))
    assert cap.alpha_cond.shape == (1, 77, TEXT_DIM)
    assert cap.time_embed_project.linear.weight.shape == (UNET_CH[0] * 4, CLIP_DIM)
    dev, f32 = torch.device("cpu"), torch.float32
    cfg = replace(tiny.cfg, sd_clip_model=str(tiny.clip))
    torch.manual_seed(0)
    px = torch.rand(1, 3, 64, 64)
    plain = sd_features(px)["s3"]
    off = StableDiffusionFeatures.load(
        replace(cfg, sd_captioner_checkpoint=str(tiny.captioner_off)), dev, f32
    )
    on = StableDiffusionFeatures.load(
        replace(cfg, sd_captioner_checkpoint=str(tiny.captioner)), dev, f32
    )
    # tanh(alpha = 0) = 0: ODISE's conditioning reduces to the empty prompt
    assert torch.allclose(off(px)["s3"], plain, atol=1e-5)
    assert not torch.allclose(on(px)["s3"], plain, atol=1e-3)
    assert len({on.cache_key(), off.cache_key(), sd_features.cache_key()}) == 3


def test_odise_captioner_bad_checkpoint(tmp_path):
    from semalign3d.models.sd import load_implicit_captioner

    torch.save(
        {"model": {"backbone.feature_extractor.alpha_cond": torch.zeros(1, 77, 8)}},
        tmp_path / "x.pth",
    )
    with pytest.raises(ModelUnavailableError, match="missing.*clip_project.linear.weight"):
        load_implicit_captioner(str(tmp_path / "x.pth"))


# ----------------------------------------------------------------------------- GeoAware
def geoaware_keys() -> list[str]:
    """The parameter names of GeoAware-SC's released best_856.PTH, written out by hand."""
    keys = []
    for i in range(4):
        for c in ("conv1", "conv2", "conv3") + (("shortcut",) if i < 3 else ()):
            keys += [f"bottleneck_layers.{i}.0.{c}.weight"]
            keys += [
                f"bottleneck_layers.{i}.0.{c}.norm.weight",
                f"bottleneck_layers.{i}.0.{c}.norm.bias",
            ]
    return keys + ["mixing_weights", "logit_scale", "self_logit_scale"]


def real_size_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    shapes = {}
    for i, d in enumerate((640, 1280, 1280, 768)):
        p = f"bottleneck_layers.{i}.0."
        shapes[p + "conv1.weight"] = (192, d, 1, 1)
        shapes[p + "conv2.weight"] = (192, 192, 3, 3)
        shapes[p + "conv3.weight"] = (768, 192, 1, 1)
        for c, n in (("conv1", 192), ("conv2", 192), ("conv3", 768)):
            shapes[p + f"{c}.norm.weight"] = shapes[p + f"{c}.norm.bias"] = (n,)
        if d != 768:
            shapes[p + "shortcut.weight"] = (768, d, 1, 1)
            shapes[p + "shortcut.norm.weight"] = shapes[p + "shortcut.norm.bias"] = (768,)
    shapes.update(mixing_weights=(4,), logit_scale=(), self_logit_scale=())
    return {k: torch.randn(s) for k, s in shapes.items()}


def test_real_size_geoaware_checkpoint_names_load(tmp_path):
    state = real_size_state()
    assert sorted(state) == sorted(geoaware_keys())
    torch.save(state, tmp_path / "best_856.PTH")
    net = load_geoaware_aggregation(tmp_path / "best_856.PTH")
    assert not net.training
    assert net.feature_dims == (640, 1280, 1280, 768) and net.projection_dim == 768
    assert torch.equal(net.mixing_weights, state["mixing_weights"])
    assert torch.equal(
        net.bottleneck_layers[2][0].shortcut.weight, state["bottleneck_layers.2.0.shortcut.weight"]
    )
    assert net.bottleneck_layers[3][0].shortcut is None
    assert sum(p.numel() for p in net.parameters()) == sum(v.numel() for v in state.values())
    out = net(torch.randn(1, 3968, 3, 3))
    assert out.shape == (1, 768, 3, 3)


def test_geoaware_checkpoint_name_mismatch_lists_keys(tmp_path):
    state = real_size_state()
    state["bottleneck_layers.0.0.conv1.bias"] = torch.zeros(192)
    del state["bottleneck_layers.1.0.shortcut.norm.bias"]
    torch.save(state, tmp_path / "bad.PTH")
    with pytest.raises(ModelUnavailableError) as err:
        load_geoaware_aggregation(tmp_path / "bad.PTH")
    msg = str(err.value)
    assert "missing keys (1): ['bottleneck_layers.1.0.shortcut.norm.bias']" in msg
    assert "unexpected keys (1): ['bottleneck_layers.0.0.conv1.bias']" in msg
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.PTH")
    with pytest.raises(ModelUnavailableError, match="missing keys"):
        load_geoaware_aggregation(tmp_path / "other.PTH")


def test_aggregation_hand_computed_case():
    from semalign3d.models.geoaware import AggregationNetwork

    net = AggregationNetwork((4, 2), projection_dim=2, num_norm_groups=1, bottleneck_channels=2)
    with torch.no_grad():
        net.mixing_weights.copy_(torch.tensor([-1e4, 0.0]))  # softmax -> (0, 1)
        net.bottleneck_layers[1][0].conv3.norm.weight.zero_()  # residual branch -> 0
        net.bottleneck_layers[1][0].conv3.norm.bias.zero_()
    x = torch.zeros(1, 6, 1, 2)
    x[0, 4:, 0] = torch.tensor([[1.0, -2.0], [-3.0, 4.0]])
    out = net(x)  # = relu(0 + identity shortcut) of the second group
    assert torch.equal(out[0, :, 0], torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    with pytest.raises(ValueError, match="expects 6 channels"):
        net(torch.zeros(1, 5, 1, 1))


def test_geoaware_encoder(tiny, geo):
    from semalign3d.models.geoaware import GeoAwareEncoder

    enc = geo
    assert isinstance(enc, GeoAwareEncoder)
    maps = enc.encode([tiny.wide, tiny.tall])
    assert [tuple(m.features.shape) for m in maps] == [(DINO_DIM, GRID, GRID)] * 2
    assert torch.allclose(maps[1].features.norm(dim=0), torch.ones(GRID, GRID), atol=1e-5)
    raw, sizes = enc.features([tiny.wide])
    assert raw.shape == (1, 32 + 96 + 96 + DINO_DIM, GRID, GRID) and sizes == [(30, 52)]
    want = F.normalize(enc.net(raw), dim=1)[0]
    assert torch.allclose(maps[0].features, want, atol=1e-5)
    # descriptors are ordinary tensors: later stages use them under autograd
    w = torch.ones(DINO_DIM, 1, 1, requires_grad=True)
    (maps[0].features * w).sum().backward()
    assert not maps[0].features.is_inference() and w.grad is not None


def test_geoaware_encoder_rejects_mismatched_checkpoint(tiny, tmp_path):
    state = real_size_state()
    torch.save(state, tmp_path / "real.PTH")
    with pytest.raises(ValueError, match="aggregation expects sources"):
        build_encoder(
            replace(tiny.cfg, name="geoaware", geoaware_checkpoint=str(tmp_path / "real.PTH"))
        )
    with pytest.raises(ModelUnavailableError, match="not configured"):
        build_encoder(replace(tiny.cfg, name="geoaware", geoaware_checkpoint=None))


def test_dino_sd_normalises_each_source():
    from semalign3d.models.dino_sd import normalize_sources

    x = torch.tensor([3.0, 4.0, 2.0]).view(1, 3, 1, 1)
    out = normalize_sources(x, (2, 1)).flatten()
    assert torch.allclose(out, torch.tensor([0.6, 0.8, 1.0]) / math.sqrt(2))
    with pytest.raises(ValueError, match="do not add up"):
        normalize_sources(x, (1, 1))


def test_dino_sd_encoder(tiny, geo):
    from semalign3d.models.dino_sd import DinoSDEncoder

    enc = DinoSDEncoder(replace(tiny.cfg, name="dino_sd"), features=geo.features)
    m = enc.encode([tiny.tall])[0]
    assert m.features.shape == (32 + 96 + 96 + DINO_DIM, GRID, GRID)
    assert torch.allclose(m.features.norm(dim=0), torch.ones(GRID, GRID), atol=1e-5)
    sd_part = m.features[: 32 + 96 + 96].norm(dim=0)
    assert torch.allclose(sd_part, torch.full((GRID, GRID), 1 / math.sqrt(2)), atol=1e-5)


# ----------------------------------------------------------------------------- depth
def test_depth_input_size_follows_dpt_rule():
    from semalign3d.models.depth_anything import input_size

    assert input_size(375, 500, 518, 14) == (392, 518)  # upscaling: longer side to 518
    assert input_size(1000, 750, 518, 14) == (686, 518)  # downscaling: shorter side to 518
    assert input_size(518, 518, 518, 14) == (518, 518)


def test_depth_anything_shapes_and_flip(tiny, tmp_path):
    model = build_depth(DepthConfig(name="depth_anything", model=str(tiny.depth), resolution=28))
    mirror = mirrored_copy(tiny.wide, tmp_path / "wide_mirror.png")
    a, b, c = model.disparity([tiny.tall, flip_image(tiny.wide), mirror])
    assert a.shape == (45, 28) and b.shape == (30, 52) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(b, c)


# ----------------------------------------------------------------------------- masks
def test_sam_masks(tiny):
    from semalign3d.models.sam import resized_shape

    assert resized_shape(500, 375, 1024) == (1024, 768)
    cfg = MaskConfig(sam_model=str(tiny.sam), device="cpu")
    kp = build_masks(cfg, "sam_keypoints").masks([tiny.wide, tiny.tall])
    box = build_masks(cfg, "sam_box").masks([tiny.tall])
    assert [m.shape for m in kp] == [(30, 52), (45, 28)] and kp[0].dtype == torch.bool
    assert box[0].shape == (45, 28)
    sam = build_masks(cfg, "sam_keypoints").sam
    from semalign3d.data.spair import load_rgb

    masks, iou = sam.predict(load_rgb(tiny.wide), points=tiny.wide.keypoints[:3])
    assert masks.shape == (3, 30, 52) and iou.shape == (3,)
    assert torch.equal(kp[0], masks[2])  # the [C] multimask index 2
    with pytest.raises(ValueError, match="point or box"):
        sam.predict(load_rgb(tiny.wide))


def test_box_none_and_ground_truth_masks(tiny):
    from semalign3d.models.masks import box_mask

    m = box_mask((1.0, 1.0, 3.0, 2.0), 3, 4)  # pixel centres 1.5, 2.5 in x; 1.5 in y
    assert torch.equal(
        m, torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    )
    b = build_masks(MaskConfig(), "bbox").masks([tiny.wide, flip_image(tiny.wide)])
    assert torch.equal(b[0].flip(-1), b[1])
    assert build_masks(MaskConfig(), "none").masks([tiny.tall])[0].all()
    with pytest.raises(DataError, match="no ground-truth mask"):
        build_masks(MaskConfig(), "ground_truth").masks([tiny.wide])


def test_odise_masks_threshold_and_flip(tmp_path, tiny):
    img = make_image(tmp_path / "JPEGImages" / "cow" / "a.png", 4, 6, seed=3)
    (tmp_path / "Masks-ODISE" / "cow").mkdir(parents=True)
    grey = np.zeros((4, 6), np.uint8)
    grey[1:3, 0:2] = 255
    grey[0, 5] = 127  # not > 127
    Image.fromarray(grey).save(tmp_path / "Masks-ODISE" / "cow" / "a.jpg", quality=100)
    src = build_masks(MaskConfig(), "odise", root=tmp_path)
    m, mf = src.masks([img, flip_image(img)])
    want = torch.zeros(4, 6, dtype=torch.bool)
    want[1:3, 0:2] = True
    assert torch.equal(m, want) and torch.equal(mf, want.flip(-1))
    with pytest.raises(DataError, match="ODISE mask not found"):
        src.masks([tiny.wide])
    with pytest.raises(DataError, match="folder not found"):
        build_masks(MaskConfig(), "odise", root=tmp_path / "missing")


def test_odise_masks_on_spair_mini(spair_mini):
    from semalign3d.data.spair import SPairDataset

    ds = SPairDataset(spair_mini)
    img = ds.image("cow", "2007_005797")
    m = build_masks(MaskConfig(), "odise", root=spair_mini).masks([img])[0]
    assert m.shape == (img.height, img.width)
    frac = m.float().mean().item()
    assert 0.05 < frac < 0.95  # a cow, not an empty or full frame
    x0, y0, x1, y1 = (int(v) for v in img.bbox)
    assert m[y0:y1, x0:x1].float().mean() > frac  # the mask sits mostly inside the box


# ----------------------------------------------------------------------------- CLI
def test_features_cli_model_path_and_overrides():
    import argparse

    from semalign3d.commands import features

    parser = argparse.ArgumentParser()
    features.add_arguments(parser)
    base = ["--root", "r", "--out", "o"]
    args = parser.parse_args(
        base + ["--encoder", "geoaware", "--model-path", "ckpt.PTH", "--sd-window", "0"]
    )
    cfg = features.encoder_config(args)
    assert (cfg.name, cfg.geoaware_checkpoint, cfg.sd_window) == ("geoaware", "ckpt.PTH", 0)
    assert cfg.dinov2_model == "facebook/dinov2-base"  # untouched defaults
    args = parser.parse_args(base + ["--encoder", "oracle", "--model-path", "x"])
    with pytest.raises(ValueError, match="does not apply"):
        features.encoder_config(args)


def test_features_cli_on_spair_mini(spair_mini, tiny, tmp_path, capsys):
    from semalign3d.cli import main

    argv = [
        "features", "--root", str(spair_mini), "--encoder", "dinov2", "--model-path",
        str(tiny.dino), "--dinov2-layer", "1", "--dinov2-resolution", "112", "--grid-size", "8",
        "--device", "cpu", "--split", "test", "--categories", "cow", "--flip", "--out",
        str(tmp_path / "feats"), "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "4 images (2 + 2 mirrored)" in first and "misses=4" in first
    (index,) = (tmp_path / "feats").glob("*/index.json")
    entries = json.loads(index.read_text())["images"]
    assert sorted(entries) == [
        "cow/2007_005797", "cow/2007_005797:flip", "cow/2009_003189", "cow/2009_003189:flip"
    ]  # fmt: skip
    assert main(argv) == 0
    assert "hits=4 misses=0" in capsys.readouterr().out
    assert main(argv[:-4] + ["--categories", "unicorn", "--out", str(tmp_path / "x")]) == 2
