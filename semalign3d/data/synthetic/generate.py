"""Write a synthetic object-class dataset in the official SPair-71k layout.

::

    ROOT/synthetic.json                         generation parameters + perception knobs
    ROOT/JPEGImages/<cat>/<name>.jpg            RGB, JPEG quality 95
    ROOT/ImageAnnotation/<cat>/<name>.json      SPair fields (bndbox of the mask, kps 0..29)
    ROOT/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<cat>.json
    ROOT/Layout/small/{trn,val,test}.txt
    ROOT/Segmentation/<cat>/<name>.png          object mask (0 / 255)
    ROOT/Oracle/<cat>/<name>.npz                what the simulated LVM / depth model see
    ROOT/Synthetic/<cat>/<name>.npz             ground truth sidecar (tests and the book only)
    ROOT/Synthetic/<cat>/class.json             true mean keypoints of the family, names

The pipeline reads SPair files, and ``Oracle/`` only through ``OracleEncoder`` and
``SyntheticDepth``; it never reads ``Synthetic/``. Everything is a function of the seed: the same
seed gives byte-identical files (fixed JPEG settings, zip entries without timestamps). Every
file is written atomically and a re-run skips images whose files all exist.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from semalign3d.data import flips
from semalign3d.data.records import DataError
from semalign3d.data.synthetic import shapes
from semalign3d.data.synthetic.camera import (
    Camera,
    CameraRanges,
    azimuth_id,
    pose_name,
    sample_camera,
)
from semalign3d.data.synthetic.pairs import pair_record, sample_pairs
from semalign3d.data.synthetic.render import (
    keypoint_visibility,
    oracle_maps,
    render_view,
    sample_lighting,
)
from semalign3d.io import atomic_write

FORMAT = "semalign3d-synthetic"
VERSION = 1
SPLITS = ("trn", "val", "test")
SPAIR_MAX_KEYPOINTS = 30  # SPair pads every category's kps dict to 30 ids
DEFAULT_CATEGORIES = ("aeroplane", "bottle", "chair", "tvmonitor")


@dataclass(frozen=True)
class OracleKnobs:
    """How the simulated LVM features look (read by ``OracleEncoder``; changing them does not
    require re-rendering)."""

    symmetry: float = 1.0  # 0: left/right distinguishable .. 1: mirror-symmetric (real LVMs)
    noise: float = 0.5  # per-cell Gaussian noise, per dimension scaled by 1/sqrt(C)
    appearance: float = 0.3  # per-instance, per-part feature shift (appearance variation)
    channels: int = 64  # descriptor dimension C (768 like GeoAware also works)
    bandwidth: float = 0.25  # length scale of the coordinate embedding, normalised units
    part_weight: float = 0.3  # share of the part-identity embedding in the feature
    context: float = 1.0  # receptive field: object features spill this many cells (Gaussian)


@dataclass(frozen=True)
class DepthKnobs:
    """How the simulated monocular depth errs (read by ``SyntheticDepth``)."""

    error: float = 0.01  # amplitude of the smooth multiplicative and additive errors


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic dataset generation."""

    categories: tuple[str, ...] = DEFAULT_CATEGORIES  # shape families to render
    seed: int = 0  # master seed; every file is a function of it
    n_train: int = 50  # train images per category (all appear in trn pairs)
    n_val: int = 5  # val images per category
    n_test: int = 30  # test images per category
    n_trn_pairs: int = 150  # trn pairs per category
    n_val_pairs: int = 20  # val pairs per category
    n_test_pairs: int = 120  # test pairs per category, stratified by viewpoint variation
    test_vv_share: tuple[float, float, float] = (0.25, 0.25, 0.5)  # test pairs with vv 0 / 1 / 2
    min_common_keypoints: int = 3  # a pair needs this many keypoints visible in both images
    min_visible_keypoints: int = 4  # views showing fewer keypoints are redrawn (e.g. TV backs)
    camera: CameraRanges = field(default_factory=CameraRanges)  # view and image-size ranges
    oracle_resolution: int = 240  # side of the Oracle/ maps over the padded square (4 x 60)
    visibility_tolerance: float = 0.01  # occluder margin, fraction of the class half-extent
    mean_samples: int = 1024  # Monte Carlo draws for the family's true mean keypoints
    oracle: OracleKnobs = field(default_factory=OracleKnobs)  # simulated LVM features
    depth: DepthKnobs = field(default_factory=DepthKnobs)  # simulated monocular depth
    threads: int = 1  # torch threads while rendering (1 is fastest for these small ops)


# ------------------------------------------------------------------------------ scene specs
@dataclass(frozen=True, eq=False)
class Scene:
    """Everything that defines one image (cheap to build; rendering is separate)."""

    name: str
    category: str
    split: str
    instance: shapes.Instance
    camera: Camera
    view: dict[str, float]
    palette: np.ndarray
    light_seed: int
    background_seed: int
    appearance_seed: int
    keypoints: torch.Tensor  # [K x 2] pixels of every keypoint (also occluded ones)
    depth: torch.Tensor  # [K] camera z of every keypoint
    visible: torch.Tensor  # [K] bool


def image_seed(seed: int, category: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(category.encode()), index])


def image_names(cfg: SynthConfig, category: str) -> list[tuple[str, str]]:
    """``(name, split)`` of every image of ``category``; train first, then val, then test."""
    out = []
    for split, n in (("trn", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
        out += [(f"{category}_{len(out) + i:04d}", split) for i in range(n)]
    return out


def make_scene(cfg: SynthConfig, category: str, index: int, name: str, split: str) -> Scene:
    fam = shapes.family(category)
    rng = np.random.default_rng(image_seed(cfg.seed, category, index))
    inst = fam.sample(rng)
    need = min(cfg.min_visible_keypoints, flips.num_keypoints(category))
    for _ in range(50):  # photographers show the annotated side (SPair has no bare TV backs)
        cam, view = sample_camera(inst.bound_points(), rng, cfg.camera)
        xy, z, vis = keypoint_visibility(inst, cam, cfg.visibility_tolerance)
        if int(vis.sum()) >= need:
            break
    palette = fam.palette(rng)
    light_seed, bg_seed, app_seed = (int(v) for v in rng.integers(0, 2**31 - 1, 3))
    return Scene(
        name, category, split, inst, cam, view, palette, light_seed, bg_seed, app_seed, xy, z, vis
    )


# ------------------------------------------------------------------------------ file writers
def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` without zip timestamps (byte-identical re-runs), atomically."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                buf = io.BytesIO()
                arr = np.asarray(arrays[key], order="C")  # keeps 0-d arrays 0-d
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                zf.writestr(info, buf.getvalue())

    atomic_write(path, write)


def _save_image(path: Path, image: Image.Image, **kwargs) -> None:
    atomic_write(path, lambda p: image.save(p, **kwargs))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def _dump(obj) -> str:
    return json.dumps(obj) + "\n"


def _r2(v: float) -> float:
    return round(float(v), 2)


def scene_files(root: Path, category: str, name: str) -> dict[str, Path]:
    return {
        "jpg": root / "JPEGImages" / category / f"{name}.jpg",
        "png": root / "Segmentation" / category / f"{name}.png",
        "oracle": root / "Oracle" / category / f"{name}.npz",
        "synthetic": root / "Synthetic" / category / f"{name}.npz",
        "json": root / "ImageAnnotation" / category / f"{name}.json",
    }


def _mask_bbox(mask: torch.Tensor, path: Path) -> list[int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        raise DataError(f"{path}: the rendered object is not in the image")
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def write_scene(root: Path, cfg: SynthConfig, scene: Scene) -> None:
    """Render ``scene`` and write its five files (the annotation JSON last)."""
    fam = shapes.family(scene.category)
    files = scene_files(root, scene.category, scene.name)
    light = sample_lighting(np.random.default_rng(scene.light_seed))
    out = render_view(
        fam,
        scene.instance,
        scene.camera,
        scene.palette,
        light,
        np.random.default_rng(scene.background_seed),
    )
    cam = scene.camera
    _save_image(
        files["jpg"],
        Image.fromarray(out["rgb"].numpy()),
        format="JPEG",
        quality=95,
        subsampling="4:2:0",
        optimize=False,
        progressive=False,
    )
    mask8 = out["mask"].numpy().astype(np.uint8) * 255
    _save_image(files["png"], Image.fromarray(mask8, mode="L"), format="PNG", compress_level=6)
    om = oracle_maps(scene.instance, fam.template(), cam, cfg.oracle_resolution)
    save_npz(
        files["oracle"],
        {
            "coords": om["coords"].numpy().astype(np.float16),
            "part": om["part"].numpy(),
            "depth": om["depth"].numpy(),
            "height": np.array(cam.height),
            "width": np.array(cam.width),
            "appearance_seed": np.array(scene.appearance_seed, dtype=np.int64),
        },
    )
    inst = scene.instance
    kp_c = inst.keypoints()
    tmpl = fam.template().keypoints()
    names = sorted(inst.params)
    save_npz(
        files["synthetic"],
        {
            "focal": np.array(cam.focal),
            "principal": np.array(cam.principal),
            "image_size": np.array([cam.width, cam.height]),
            "rotation": cam.rotation,
            "translation": cam.translation,
            "keypoints_canonical": kp_c.numpy(),
            "keypoints_template": tmpl.numpy(),
            "keypoints_camera": cam.to_camera(kp_c).numpy(),
            "keypoints_pixels": scene.keypoints.numpy(),
            "visible": scene.visible.numpy(),
            "depth": out["depth"].numpy(),
            "azimuth": np.array(scene.view["azimuth"]),
            "elevation": np.array(scene.view["elevation"]),
            "roll": np.array(scene.view["roll"]),
            "param_names": np.array(names),
            "param_values": np.array([inst.params[k] for k in names]),
        },
    )
    kps: dict[str, list[float] | None] = {}
    for k in range(SPAIR_MAX_KEYPOINTS):
        if k < len(scene.visible) and bool(scene.visible[k]):
            kps[str(k)] = [_r2(scene.keypoints[k, 0]), _r2(scene.keypoints[k, 1])]
        else:
            kps[str(k)] = None
    ann = {
        "filename": f"{scene.name}.jpg",
        "src_database": "semalign3d synthetic",
        "src_annotation": f"{FORMAT} v{VERSION}",
        "src_image": "rendered",
        "image_width": cam.width,
        "image_height": cam.height,
        "image_depth": 3,
        "category": scene.category,
        "pose": pose_name(scene.view["azimuth"]),
        "truncated": 0,
        "occluded": int(not bool(scene.visible.all())),
        "difficult": 0,
        "bndbox": _mask_bbox(out["mask"], files["png"]),
        "kps": kps,
        "azimuth_id": azimuth_id(scene.view["azimuth"]),
    }
    _write_text(files["json"], _dump(ann))


# ------------------------------------------------------------------------------ metadata
def metadata(cfg: SynthConfig, categories: Sequence[str]) -> dict:
    gen = dataclasses.asdict(cfg)
    for k in ("categories", "oracle", "depth", "threads"):
        gen.pop(k)
    return {
        "format": FORMAT,
        "version": VERSION,
        "seed": cfg.seed,
        "categories": sorted(categories),
        "generation": json.loads(json.dumps(gen)),
        "oracle": dataclasses.asdict(cfg.oracle),
        "depth": dataclasses.asdict(cfg.depth),
    }


def read_metadata(root: str | Path) -> dict:
    """The root's ``synthetic.json``; DataError naming the file if absent or not synthetic."""
    path = Path(root) / "synthetic.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DataError(
            f"{path}: not found; generate the dataset with 'semalign3d data synth --out {root}'"
        ) from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} metadata file")
    if meta.get("version") != VERSION:
        raise DataError(f"{path}: version {meta.get('version')} but this code reads {VERSION}")
    # a generation setting this code knows but the file lacks means the dataset predates it:
    # its images were drawn by other rules (e.g. TV backs before min_visible_keypoints)
    known = metadata(SynthConfig(), [])["generation"]
    missing = sorted(set(known) - set(meta.get("generation", {})))
    if missing:
        g = meta.get("generation", {})
        counts = " ".join(f"--{k.replace('_', '-')} {g[k]}" for k in
                          ("n_train", "n_val", "n_test", "n_test_pairs") if k in g)
        raise DataError(
            f"{path}: written by an older generator (no {', '.join(missing)} in 'generation'); "
            f"delete {Path(root)} and regenerate it with 'semalign3d data synth --out {root} "
            f"--seed {meta.get('seed', 0)} {counts}' (plus any oracle/depth options used)"
        )
    return meta


def class_record(category: str, train_scenes: Sequence[Scene], n_mc: int = 1024) -> dict:
    fam = shapes.family(category)
    centre, half = shapes.class_frame(category)
    train = torch.stack([s.instance.keypoints() for s in train_scenes]).mean(0).tolist()
    return {
        "category": category,
        "num_keypoints": flips.num_keypoints(category),
        "keypoint_names": list(fam.keypoint_names),
        "part_names": list(fam.part_names),
        "mean_keypoints": shapes.mean_keypoints(category, n=n_mc).tolist(),
        "mean_keypoints_samples": n_mc,
        "template_keypoints": fam.template().keypoints().tolist(),
        "train_mean_keypoints": train,
        "normalisation": {"centre": centre.tolist(), "half_extent": half},
        "parameter_ranges": {k: list(v) for k, v in fam.ranges.items()},
        "units": "metres; canonical frame x lateral (mirror plane x=0), y up, z front",
    }


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------ main entry
def generate_dataset(
    root: str | Path,
    cfg: SynthConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Generate (or complete) the dataset under ``root``.

    Returns:
        summary ``{"images": {cat: {split: n}}, "pairs": {cat: {split: n}}, "rendered": n,
        "skipped": n}``.
    """
    cfg = cfg or SynthConfig()
    root = Path(root)
    for c in cfg.categories:
        shapes.check_family(c)  # DataError for unknown categories, before touching the disk
    for name, n in (("n_train", cfg.n_train), ("n_test", cfg.n_test), ("n_val", cfg.n_val)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    if cfg.oracle_resolution < 1:
        raise ValueError(f"oracle_resolution must be positive, got {cfg.oracle_resolution}")
    meta_path = root / "synthetic.json"
    cats = set(cfg.categories)
    if meta_path.exists():
        old = read_metadata(root)
        new = metadata(cfg, cfg.categories)
        if old["generation"] != new["generation"] or old["seed"] != new["seed"]:
            raise DataError(
                f"{meta_path}: the dataset there was generated with other parameters; "
                "choose another --out or delete it"
            )
        cats |= set(old["categories"])
    _write_text(meta_path, json.dumps(metadata(cfg, sorted(cats)), indent=1) + "\n")

    for split in SPLITS:  # the layout is complete even when a split has no pairs
        (root / "PairAnnotation" / split).mkdir(parents=True, exist_ok=True)
    summary: dict = {"images": {}, "pairs": {}, "rendered": 0, "skipped": 0}
    with _torch_threads(cfg.threads):
        for category in cfg.categories:
            names = image_names(cfg, category)
            scenes = [make_scene(cfg, category, i, n, s) for i, (n, s) in enumerate(names)]
            bar = tqdm(scenes, desc=f"render {category}", disable=not progress, leave=False)
            for sc in bar:
                files = scene_files(root, category, sc.name)
                if all(p.exists() for p in files.values()):
                    summary["skipped"] += 1
                    continue
                write_scene(root, cfg, sc)
                summary["rendered"] += 1
            anns = {
                sc.name: json.loads(scene_files(root, category, sc.name)["json"].read_text())
                for sc in scenes
            }
            summary["images"][category] = {s: sum(sc.split == s for sc in scenes) for s in SPLITS}
            summary["pairs"][category] = {}
            for k, split in enumerate(SPLITS):
                group = [sc for sc in scenes if sc.split == split]
                rng = np.random.default_rng(image_seed(cfg.seed, category, 10_000_000 + k))
                pairs = sample_pairs(group, split, cfg, rng)
                write_pairs(root, split, group, anns, pairs)
                summary["pairs"][category][split] = len(pairs)
            train = [sc for sc in scenes if sc.split == "trn"] or scenes
            cls = class_record(category, train, cfg.mean_samples)
            _write_text(
                root / "Synthetic" / category / "class.json", json.dumps(cls, indent=1) + "\n"
            )
            if log is not None:
                log(
                    f"{category}: {summary['images'][category]} images, "
                    f"{summary['pairs'][category]} pairs"
                )
    write_layouts(root)
    return summary


def write_pairs(
    root: Path, split: str, group: Sequence[Scene], anns: dict[str, dict],
    pairs: Sequence[tuple[int, int]],
) -> None:
    """``PairAnnotation/<split>/*.json`` of ``pairs`` (indices into ``group``, ids from 1);
    existing files are kept (a resumed run writes the same ones)."""
    for pid, (i, j) in enumerate(pairs, start=1):
        rec = pair_record(pid, group[i], group[j], anns[group[i].name], anns[group[j].name])
        path = root / "PairAnnotation" / split / f"{rec['filename']}.json"
        if not path.exists():
            _write_text(path, _dump(rec))


def write_layouts(root: Path) -> None:
    """``Layout/small/<split>.txt``: the pair files of each split, sorted (written last, so its
    presence marks a complete dataset)."""
    for split in SPLITS:
        d = root / "PairAnnotation" / split
        stems = sorted(p.name[:-5] for p in d.glob("*.json")) if d.is_dir() else []
        _write_text(root / "Layout" / "small" / f"{split}.txt", "".join(s + "\n" for s in stems))
