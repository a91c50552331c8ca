"""Pairs of a split: which images are matched, and the SPair pair-annotation record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from semalign3d.data.synthetic.camera import is_mirror_pair, viewpoint_variation

if TYPE_CHECKING:
    from semalign3d.data.synthetic.generate import Scene, SynthConfig


def _r2(v: float) -> float:
    return round(float(v), 2)


def common_keypoints(a: Scene, b: Scene) -> list[int]:
    """Ids visible in both images, ascending."""
    return torch.nonzero(a.visible & b.visible).flatten().tolist()


def sample_pairs(
    scenes: Sequence[Scene], split: str, cfg: SynthConfig, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Ordered ``(source, target)`` index pairs of one split of one category.

    ``trn`` pairs first chain a random permutation so that every train image appears in a pair;
    ``test`` pairs are stratified by SPair's viewpoint-variation bucket.
    """
    n = len(scenes)
    if n < 2:
        return []
    vis = torch.stack([s.visible for s in scenes]).double()
    ok = ((vis @ vis.T) >= cfg.min_common_keypoints).numpy()
    np.fill_diagonal(ok, False)
    want = {"trn": cfg.n_trn_pairs, "val": cfg.n_val_pairs, "test": cfg.n_test_pairs}[split]
    cand = [(int(i), int(j)) for i, j in zip(*np.nonzero(ok), strict=True)]
    if not cand or want <= 0:
        return []
    chosen: dict[tuple[int, int], None] = {}
    if split == "trn":
        perm = rng.permutation(n)
        for a, b in zip(perm, np.roll(perm, -1), strict=True):
            if ok[a, b]:
                chosen[(int(a), int(b))] = None
            elif ok[b, a]:
                chosen[(int(b), int(a))] = None
        covered = {i for p in chosen for i in p}
        for i in range(n):  # images left out of the chain: pair with any valid partner
            if i not in covered:
                partners = np.nonzero(ok[i])[0]
                if len(partners):
                    chosen[(i, int(rng.choice(partners)))] = None
        rest = [cand[k] for k in rng.permutation(len(cand)) if cand[k] not in chosen]
        for p in rest[: max(0, want - len(chosen))]:
            chosen[p] = None
    elif split == "test":
        groups: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
        for k in rng.permutation(len(cand)):
            i, j = cand[k]
            vv = viewpoint_variation(scenes[i].view["azimuth"], scenes[j].view["azimuth"])
            groups[vv].append((i, j))
        quota = [int(round(want * s)) for s in cfg.test_vv_share]
        taken = []
        for vv in (2, 1, 0):
            taken += groups[vv][: quota[vv]]
            groups[vv] = groups[vv][quota[vv] :]
        leftover = [p for vv in (2, 1, 0) for p in groups[vv]]
        taken += leftover[: max(0, want - len(taken))]
        chosen = dict.fromkeys(taken)
    else:
        for k in rng.permutation(len(cand))[:want]:
            chosen[cand[k]] = None
    order = list(chosen)
    return [order[k] for k in rng.permutation(len(order))]


def pair_record(pair_id: int, src: Scene, trg: Scene, src_ann: dict, trg_ann: dict) -> dict:
    ids = common_keypoints(src, trg)
    stem = f"{pair_id:06d}-{src.name}-{trg.name}:{src.category}"
    return {
        "pair_id": pair_id,
        "filename": stem,
        "src_imname": f"{src.name}.jpg",
        "trg_imname": f"{trg.name}.jpg",
        "src_imsize": [src.camera.width, src.camera.height, 3],
        "trg_imsize": [trg.camera.width, trg.camera.height, 3],
        "src_bndbox": src_ann["bndbox"],
        "trg_bndbox": trg_ann["bndbox"],
        "category": src.category,
        "src_pose": src_ann["pose"],
        "trg_pose": trg_ann["pose"],
        "src_kps": [[_r2(src.keypoints[k, 0]), _r2(src.keypoints[k, 1])] for k in ids],
        "trg_kps": [[_r2(trg.keypoints[k, 0]), _r2(trg.keypoints[k, 1])] for k in ids],
        "kps_ids": [str(k) for k in ids],
        "mirror": is_mirror_pair(src.view["azimuth"], trg.view["azimuth"]),
        "viewpoint_variation": viewpoint_variation(src.view["azimuth"], trg.view["azimuth"]),
    }
