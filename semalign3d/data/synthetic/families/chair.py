"""Chairs with armrests: seat, tilted backrest, four tapered legs, armrests on front supports."""

from __future__ import annotations

import math

import numpy as np

from semalign3d.data.synthetic.family import (
    UP_FRAME,
    Family,
    KeypointDef,
    box,
    hsv,
    lr,
    mirror_pair,
    partner_keypoints,
    side_keypoints,
    upbox,
)
from semalign3d.data.synthetic.primitives import Primitive

RANGES = {
    "seat_w": (0.38, 0.56),  # seat width, m
    "seat_d": (0.36, 0.52),  # seat depth
    "seat_h": (0.38, 0.52),  # seat top above the floor
    "seat_t": (0.03, 0.08),  # seat thickness
    "back_h": (0.32, 0.6),  # backrest height above the seat
    "back_t": (0.025, 0.06),  # backrest thickness
    "back_tilt": (0.0, 16.0),  # backrest tilt, degrees
    "back_w": (0.85, 1.0),  # backrest width / seat width
    "back_top": (0.85, 1.1),  # backrest top width / bottom width
    "leg_w": (0.03, 0.06),  # leg side at the top
    "leg_taper": (0.65, 1.0),  # leg side at the foot / at the top
    "arm_h": (0.16, 0.28),  # armrest top above the seat
    "arm_w": (0.035, 0.07),  # armrest width
    "arm_t": (0.02, 0.045),  # armrest thickness
    "arm_len": (0.6, 0.9),  # armrest front end, fraction of the seat depth from the back
}
KEYPOINTS = lr(
    "backrest top",
    "backrest bottom",
    "seat front",
    "front leg foot",
    "back leg foot",
    "armrest back",
    "armrest front",
)
PARTS = ("seat", "backrest", "front leg", "back leg", "armrest", "arm support")


def build(p: dict[str, float]) -> tuple[list[Primitive], list[KeypointDef]]:
    sw, sd, sh, st = p["seat_w"], p["seat_d"], p["seat_h"], p["seat_t"]
    bh, bt, tau = p["back_h"], p["back_t"], math.radians(p["back_tilt"])
    lw, ah, aw, at = p["leg_w"], p["arm_h"], p["arm_w"], p["arm_t"]
    prims = [upbox((0, sh - st / 2, 0), (sw / 2, st / 2, sd / 2), 0)]
    # backrest frame: u = x, v = its front normal, w = up the (tilted) backrest
    back_frame = np.array(
        [[1.0, 0.0, 0.0], [0.0, math.sin(tau), math.cos(tau)], [0.0, math.cos(tau), -math.sin(tau)]]
    ).T
    hb = p["back_w"] * sw / 2
    back_size = (hb, bt / 2, hb * p["back_top"], bt / 2, 0.0, 0.0, bh)
    prims.append(box((0, sh, -sd / 2 + bt / 2), back_frame, back_size, 1))
    legs = []
    for z, part in ((sd / 2 - lw / 2, 2), (-sd / 2 + lw / 2, 3)):
        a = lw / 2 * p["leg_taper"]
        leg = box((sw / 2 - lw / 2, 0, z), UP_FRAME, (a, a, lw / 2, lw / 2, 0, 0, sh - st), part)
        legs.append(mirror_pair(prims, leg))
    # armrest: from inside the (tilted) backrest to the front, on top of a front support
    z_back = -sd / 2 + bt / 2 - ah * math.tan(tau)
    z_front = -sd / 2 + p["arm_len"] * sd
    zc, hz = 0.5 * (z_back + z_front), 0.5 * (z_front - z_back)
    arm = mirror_pair(
        prims, upbox((sw / 2 - aw / 2, sh + ah - at / 2, zc), (aw / 2, at / 2, hz), 4)
    )
    sup = (ah - at) / 2
    support = upbox(
        (sw / 2 - aw / 2, sh + sup, z_front - aw / 2), (aw * 0.4, sup + 1e-3, aw * 0.4), 5
    )
    mirror_pair(prims, support)
    # where the armrest leaves the backrest's front face (local v of that z)
    v_exit = min(1.0, (z_back + bt / 2 / math.cos(tau) + 0.005 - zc) / hz)
    # keypoints on thin parts get their thickness as tolerance: seen from both sides
    kps = (
        side_keypoints(1, (1, 0, 1), bt)
        + side_keypoints(1, (1, 1, 0))
        + side_keypoints(0, (1, 1, 1), st)
        + partner_keypoints(legs[0], (1, 1, 0), lw)
        + partner_keypoints(legs[1], (1, -1, 0), lw)
        + partner_keypoints(arm, (1, v_exit, 1), at)
        + partner_keypoints(arm, (1, 1, 1), at)
    )
    return prims, kps


def palette(rng: np.random.Generator) -> np.ndarray:
    body = hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.35, 0.9))
    wood = hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.7))
    metal = np.full(3, rng.uniform(0.2, 0.8))
    legs = wood if rng.uniform() < 0.6 else metal
    arm = body if rng.uniform() < 0.5 else legs
    return np.stack([body, body * 0.92, legs, legs, arm, legs, body])


FAMILY = Family("chair", RANGES, KEYPOINTS, PARTS, build, palette)
