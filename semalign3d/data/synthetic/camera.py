"""Pinhole cameras in the normalised convention of ``semalign3d.geometry`` and their sampling.

Pixel ``(i, j)`` (row, column) covers ``[j, j+1) x [i, i+1)``; its centre is ``(j + 0.5, i + 0.5)``,
the convention of ``FeatureGrid`` and of ``geometry.project`` (principal point at the image
centre). A camera maps canonical points to the camera frame by ``X = R p + t`` (x right, y down,
z forward). Azimuth 0 looks at the object's front (+z), azimuth 90 deg at its left side (+x);
elevation is positive from above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from semalign3d.data.synthetic.primitives import MIRROR


@dataclass(frozen=True, eq=False)
class Camera:
    """A posed pinhole camera.

    Attributes:
        rotation: ``[3 x 3]`` canonical -> camera rotation ``R``.
        translation: ``[3]`` ``t`` with ``X_cam = R p + t``.
        focal: ``f`` in units of ``max(H, W)``.
        width, height: image size in pixels.
    """

    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    width: int
    height: int

    @property
    def side(self) -> int:
        return max(self.width, self.height)

    @property
    def principal(self) -> tuple[float, float]:
        """``(px, py)`` in normalised units (``geometry.principal_point``)."""
        s = float(self.side)
        return self.width / (2 * s), self.height / (2 * s)

    @property
    def center(self) -> np.ndarray:
        """``[3]`` camera centre in the canonical frame."""
        return -self.rotation.T @ self.translation

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """Canonical ``[N x 3]`` -> camera frame ``[N x 3]``."""
        r = torch.as_tensor(self.rotation, dtype=points.dtype)
        t = torch.as_tensor(self.translation, dtype=points.dtype)
        return points @ r.T + t

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canonical ``[N x 3]`` -> ``(pixels [N x 2], depth [N])``."""
        x = self.to_camera(points)
        px, py = self.principal
        s = float(self.side)
        u = self.focal * x[:, 0] / x[:, 2] + px
        v = self.focal * x[:, 1] / x[:, 2] + py
        return torch.stack([u, v], -1) * s, x[:, 2]

    def rays(self, pixels: torch.Tensor) -> torch.Tensor:
        """Canonical ray directions ``[N x 3]`` through ``pixels [N x 2]``, scaled so that the
        ray parameter ``t`` equals the camera-frame depth ``z``."""
        px, py = self.principal
        s = float(self.side)
        d = torch.stack(
            [
                (pixels[:, 0] / s - px) / self.focal,
                (pixels[:, 1] / s - py) / self.focal,
                torch.ones_like(pixels[:, 0]),
            ],
            -1,
        )
        return d @ torch.as_tensor(self.rotation, dtype=pixels.dtype)

    def mirrored(self) -> Camera:
        """The camera that sees the mirror image (``x -> -x``) of the scene as the horizontally
        flipped image: ``R' = M R M``, ``t' = M t``."""
        return Camera(
            MIRROR @ self.rotation @ MIRROR,
            MIRROR @ self.translation,
            self.focal,
            self.width,
            self.height,
        )

    def to_dict(self) -> dict:
        return {
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "focal": self.focal,
            "width": self.width,
            "height": self.height,
        }


def view_rotation(azimuth: float, elevation: float, roll: float = 0.0) -> np.ndarray:
    """``[3 x 3]`` canonical -> camera rotation of a camera looking at the origin from azimuth /
    elevation (degrees), rolled by ``roll`` degrees about its optical axis."""
    a, e = math.radians(azimuth), math.radians(elevation)
    toward_cam = np.array([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])
    forward = -toward_cam
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    r = np.stack([right, down, forward])
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    roll_m = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return roll_m @ r


def azimuth_id(azimuth: float) -> int:
    """SPair-style azimuth bin 0..7 (45 deg each, bin 0 centred on the front view)."""
    return int(((azimuth + 22.5) % 360.0) // 45.0)


def pose_name(azimuth: float) -> str:
    """SPair's coarse 'pose' label from the azimuth."""
    a = azimuth % 360.0
    if a < 45 or a >= 315:
        return "Frontal"
    if a < 135:
        return "Left"
    if a < 225:
        return "Rear"
    return "Right"


def viewpoint_variation(az_a: float, az_b: float) -> int:
    """SPair's 0 / 1 / 2 bucket: difference of the 8 azimuth bins (0, 1, >= 2)."""
    d = abs(azimuth_id(az_a) - azimuth_id(az_b))
    return min(min(d, 8 - d), 2)


def is_mirror_pair(az_a: float, az_b: float) -> int:
    """1 when one view shows the object's left side and the other its right side."""
    sa, sb = math.sin(math.radians(az_a)), math.sin(math.radians(az_b))
    return int(sa * sb < 0 and min(abs(sa), abs(sb)) > 0.5)


@dataclass(frozen=True)
class CameraRanges:
    """Distributions of the sampled cameras (uniform unless stated)."""

    long_side: tuple[int, int] = (400, 500)  # longest image side in px
    aspect: tuple[float, float] = (0.6, 1.0)  # short / long image side
    elevation: tuple[float, float] = (-10.0, 45.0)  # degrees, positive = from above
    roll_std: float = 4.0  # degrees, Gaussian
    focal: tuple[float, float] = (0.9, 2.5)  # f in units of the longest side
    fill: tuple[float, float] = (0.5, 0.9)  # object box side / image side (the larger ratio)
    margin: float = 0.02  # minimum gap between object box and image border, fraction of side


def frame_camera(
    points: np.ndarray,
    rotation: np.ndarray,
    focal: float,
    width: int,
    height: int,
    fill: float,
    shift: tuple[float, float],
    margin: float,
) -> Camera:
    """Place the object (``points [M x 3]`` canonical) in front of a camera of given rotation so
    that its projected box fills ``fill`` of the image and is shifted by ``shift`` (each in
    [-1, 1], a fraction of the free space), keeping ``margin`` from the border."""
    c = 0.5 * (points.min(0) + points.max(0))
    pts = torch.from_numpy(points)
    s = float(max(width, height))
    dist = 3.0 * float(np.linalg.norm(points - c, axis=-1).max()) * max(focal, 1.0)
    t = np.array([0.0, 0.0, dist]) - rotation @ c
    cam = Camera(rotation, t, focal, width, height)
    for _ in range(4):
        xy, _ = cam.project(pts)
        lo, hi = xy.min(0).values.numpy(), xy.max(0).values.numpy()
        cur = max((hi[0] - lo[0]) / width, (hi[1] - lo[1]) / height)
        dist *= cur / fill
        t = np.array([0.0, 0.0, dist]) - rotation @ c
        # keep the box centred while the distance settles
        mid = 0.5 * (lo + hi) - np.array([width, height]) / 2
        t[:2] -= mid / (focal * s) * dist
        cam = Camera(rotation, t, focal, width, height)
    for _ in range(3):
        xy, _ = cam.project(pts)
        lo, hi = xy.min(0).values.numpy(), xy.max(0).values.numpy()
        size = np.array([width, height], float)
        m = margin * s
        free_lo, free_hi = m - lo, size - m - hi  # allowed pixel shift interval per axis
        target = np.where(
            free_hi >= free_lo,
            0.5 * (free_lo + free_hi) + 0.5 * np.array(shift) * (free_hi - free_lo),
            0.5 * (free_lo + free_hi),
        )
        z = float((rotation @ c + cam.translation)[2])
        t = cam.translation.copy()
        t[:2] += target / (focal * s) * z
        cam = Camera(rotation, t, focal, width, height)
    return cam


def sample_camera(
    points: np.ndarray, rng: np.random.Generator, ranges: CameraRanges
) -> tuple[Camera, dict[str, float]]:
    """A random camera looking at the object given by its bound ``points [M x 3]``.

    Returns:
        ``(camera, view)`` with ``view = {"azimuth", "elevation", "roll"}`` in degrees.
    """
    az = float(rng.uniform(0.0, 360.0))
    el = float(rng.uniform(*ranges.elevation))
    roll = float(rng.normal(0.0, ranges.roll_std))
    f = float(rng.uniform(*ranges.focal))
    fill = float(rng.uniform(*ranges.fill))
    long_side = int(rng.integers(ranges.long_side[0], ranges.long_side[1] + 1))
    short = int(round(long_side * rng.uniform(*ranges.aspect)))
    rot = view_rotation(az, el, roll)
    # photographers frame tall objects in portrait: orient the image like the object's box
    probe = frame_camera(points, rot, f, 256, 256, 0.8, (0.0, 0.0), 0.0)
    xy, _ = probe.project(torch.from_numpy(points))
    ext = (xy.max(0).values - xy.min(0).values).numpy()
    portrait = (ext[1] > ext[0]) == (rng.uniform() < 0.8)
    w, h = (short, long_side) if portrait else (long_side, short)
    shift = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
    cam = frame_camera(points, rot, f, w, h, fill, shift, ranges.margin)
    return cam, {"azimuth": az, "elevation": el, "roll": roll}
