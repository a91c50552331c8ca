"""Airliners: fuselage with an ellipsoidal nose and an upswept tail cone, swept low wings with
under-wing engines, horizontal stabilisers and a fin. The nose points to +z."""

from __future__ import annotations

import math

import numpy as np
import torch

from semalign3d.data.synthetic.family import (
    ID_FRAME,
    Family,
    KeypointDef,
    axis_frame,
    box,
    frustum,
    hsv,
    lr,
    mirror_pair,
    partner_keypoints,
    upbox,
)
from semalign3d.data.synthetic.primitives import Primitive

RANGES = {
    "length": (24.0, 40.0),  # fuselage length, m
    "fus_r": (0.045, 0.065),  # fuselage radius / length
    "nose_frac": (0.08, 0.14),  # nose length / length
    "tail_frac": (0.18, 0.28),  # tail cone length / length
    "tail_r": (0.15, 0.35),  # tail end radius / fuselage radius
    "tail_up": (0.5, 0.9),  # upsweep of the tail cone (1 = straight top line)
    "span": (0.8, 1.15),  # wing span / length
    "root_chord": (0.14, 0.22),  # wing root chord / length
    "wing_taper": (0.25, 0.5),  # tip chord / root chord
    "sweep": (15.0, 35.0),  # leading-edge sweep, degrees
    "wing_pos": (0.36, 0.46),  # root leading edge behind the nose, fraction of length
    "wing_t": (0.1, 0.14),  # wing thickness / root chord
    "dihedral": (2.0, 8.0),  # degrees
    "wing_y": (-0.6, -0.3),  # wing root height / fuselage radius (low wing)
    "eng_r": (0.45, 0.7),  # engine radius / fuselage radius
    "eng_len": (0.1, 0.16),  # engine length / length
    "eng_span": (0.28, 0.4),  # engine position, fraction of the half span
    "hstab_span": (0.3, 0.42),  # stabiliser span / wing span
    "hstab_chord": (0.45, 0.6),  # stabiliser root chord / wing root chord
    "hstab_sweep": (25.0, 40.0),  # degrees
    "fin_h": (0.14, 0.22),  # fin height / length
    "fin_chord": (0.14, 0.2),  # fin root chord / length
    "fin_sweep": (30.0, 50.0),  # degrees
    "fin_taper": (0.3, 0.6),  # fin tip chord / root chord
}
KEYPOINTS = (
    ("nose tip", "cockpit top", "belly under wings", "fuselage top over wings")
    + lr("wing root leading", "wing root trailing", "wing tip leading", "wing tip trailing")
    + lr("engine intake", "engine exhaust")
    + lr("stabilizer root leading", "stabilizer tip leading", "stabilizer tip trailing")
    + ("tail end", "fin top", "fin root leading")
)
PARTS = ("fuselage", "nose", "wing", "engine", "stabilizer", "fin")
STAB_DIHEDRAL = 4.0  # degrees


def wing(root, chord, taper, thick, half_span, sweep, dihedral, part) -> Primitive:
    """Tapered swept wing from ``root`` outwards along +x; local u = chord (front +1)."""
    d = math.radians(dihedral)
    frame = axis_frame(np.array([math.cos(d), math.sin(d), 0.0]), np.array([0.0, 0.0, 1.0]))
    a1, b1 = chord / 2, chord * taper / 2
    o1 = a1 - b1 - half_span * math.tan(math.radians(sweep))
    return box(root, frame, (a1, thick / 2, b1, thick * taper / 2, o1, 0, half_span), part)


def build(p: dict[str, float]) -> tuple[list[Primitive], list[KeypointDef]]:
    ln = p["length"]
    r = p["fus_r"] * ln
    nose, tail = p["nose_frac"] * ln, p["tail_frac"] * ln
    zt, zn = -ln / 2 + tail, ln / 2 - nose
    z0 = zt - 0.05 * r  # the cylinder reaches a little into the tail cone: no seam
    rt = r * p["tail_r"]
    up = (r - rt) * p["tail_up"]
    tail_axis = np.array([0.0, up, -tail])
    prims = [
        frustum((0, 0, z0), ID_FRAME, r, r, zn - z0, 0),
        Primitive("ellipsoid", np.array([0, 0, zn]), ID_FRAME, (r, r, nose), 1),
        frustum(
            (0, 0, zt),
            axis_frame(tail_axis, np.array([1.0, 0, 0])),
            r,
            rt,
            float(np.linalg.norm(tail_axis)),
            0,
        ),
    ]

    def tail_section(z: float) -> tuple[float, float]:
        """(radius, centre height) of the tail cone at ``z``."""
        s = min(max((zt - z) / tail, 0.0), 1.0)
        return r + s * (rt - r), s * up

    # main wings, root on the centre line (hidden inside the fuselage)
    hs = p["span"] * ln / 2
    rc = p["root_chord"] * ln
    wy = p["wing_y"] * r
    zc = ln / 2 - p["wing_pos"] * ln - rc / 2
    wt = p["wing_t"] * rc
    d = math.radians(p["dihedral"])
    wings = mirror_pair(
        prims, wing((0, wy, zc), rc, p["wing_taper"], wt, hs, p["sweep"], p["dihedral"], 2)
    )
    w_root = (math.sqrt(max(r * r - wy * wy, 0.0)) + 0.02 * r) / (hs * math.cos(d))
    # engines under the wings, intake ahead of the leading edge, on a pylon
    er, el, s = p["eng_r"] * r, p["eng_len"] * ln, p["eng_span"]
    xe = s * hs * math.cos(d)
    ye = wy + s * hs * math.sin(d) - wt / 2 - er * 1.15
    z_le = zc + rc / 2 - s * hs * math.tan(math.radians(p["sweep"]))
    eng = mirror_pair(prims, frustum((xe, ye, z_le - 0.6 * el), ID_FRAME, 0.75 * er, er, el, 3))
    pylon = (
        (xe, ye + er * 0.6 + wt / 2, z_le - 0.15 * el),
        (er * 0.15, er * 0.6 + wt / 2, 0.3 * el),
    )
    mirror_pair(prims, upbox(*pylon, 3))
    # horizontal stabilisers
    hc = p["hstab_chord"] * rc
    zh = -ln / 2 + hc / 2 + 0.04 * ln
    rh, yh = tail_section(zh)
    hhs = p["hstab_span"] * p["span"] * ln / 2
    stab = mirror_pair(
        prims, wing((0, yh, zh), hc, 0.5, 0.1 * hc, hhs, p["hstab_sweep"], STAB_DIHEDRAL, 4)
    )
    h_root = (rh + 0.02 * r) / (hhs * math.cos(math.radians(STAB_DIHEDRAL)))
    # vertical fin, rooted inside the top of the tail cone
    fc, fh = p["fin_chord"] * ln, p["fin_h"] * ln
    zf = -ln / 2 + fc / 2 + 0.02 * ln
    rf, yf = tail_section(zf)
    fin_frame = np.array([[0.0, 0, 1], [1.0, 0, 0], [0.0, 1, 0]]).T  # u = z, v = x, w = y
    a1, b1 = fc / 2, fc * p["fin_taper"] / 2
    y_base = yf + 0.5 * rf
    fin_len = fh + (yf + rf - y_base)
    o1 = a1 - b1 - fin_len * math.tan(math.radians(p["fin_sweep"]))
    ft = 0.1 * fc
    prims.append(
        box(
            (0, y_base, zf), fin_frame, (a1, ft / 2, b1, ft * p["fin_taper"] / 2, o1, 0, fin_len), 5
        )
    )
    fin = len(prims) - 1
    f_root = (yf + rf + 0.02 * r - y_base) / fin_len
    w_wing = (zc - z0) / (zn - z0)
    c = 1 / math.sqrt(2)  # the engine rims' outer-lower point
    kps = (
        [KeypointDef(1, (0, 0, 1)), KeypointDef(1, (0, 0.8, 0.6))]
        + [KeypointDef(0, (0, -1, w_wing)), KeypointDef(0, (0, 1, w_wing))]
        + partner_keypoints(wings, (1, 0, w_root), wt)
        + partner_keypoints(wings, (-1, 0, w_root), wt)
        + partner_keypoints(wings, (1, 0, 1), wt)
        + partner_keypoints(wings, (-1, 0, 1), wt)
        + partner_keypoints(eng, (c, -c, 1))
        + partner_keypoints(eng, (c, -c, 0))
        + partner_keypoints(stab, (1, 0, h_root), 0.1 * hc)
        + partner_keypoints(stab, (1, 0, 1), 0.1 * hc)
        + partner_keypoints(stab, (-1, 0, 1), 0.1 * hc)
        + [KeypointDef(2, (0, 0, 1), rt), KeypointDef(fin, (1, 0, 1), ft)]
        + [KeypointDef(fin, (1, 0, f_root), ft)]
    )
    return prims, kps


def palette(rng: np.random.Generator) -> np.ndarray:
    body = np.full(3, rng.uniform(0.75, 0.97)) * (1 + rng.uniform(-0.04, 0.04, 3))
    accent = hsv(rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9))
    wing_col = np.full(3, rng.uniform(0.55, 0.8))
    engine = np.full(3, rng.uniform(0.3, 0.6))
    return np.stack([body, body, wing_col, engine, wing_col, accent, accent])


def decal(part: int, ell: torch.Tensor) -> torch.Tensor:
    """A cheat line along the fuselage and a dark cockpit window."""
    if part == 0:
        return (ell[:, 1] > 0.05) & (ell[:, 1] < 0.3)
    if part == 1:
        return (ell[:, 1] > 0.35) & (ell[:, 2] > 0.35) & (ell[:, 1] < 0.75)
    return torch.zeros(len(ell), dtype=torch.bool)


FAMILY = Family("aeroplane", RANGES, KEYPOINTS, PARTS, build, palette, decal)
