"""Exact ray-cast rendering of shape instances (pure torch, CPU).

Every pixel's ray is intersected analytically with the convex primitives (no splatting, so no
holes and exact silhouettes). A hit knows its primitive and normalised local coordinates, which
give the part id, the shading normal and the *template coordinate* (the same local point on the
family template) that the oracle encoder embeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semalign3d.data.synthetic.camera import Camera
from semalign3d.data.synthetic.shapes import Family, Instance, class_frame


@dataclass(frozen=True)
class Hits:
    """First hits of ``N`` rays. ``prim`` is -1 and ``t`` is inf on a miss."""

    t: torch.Tensor  # [N] ray parameter (camera depth for Camera.rays)
    prim: torch.Tensor  # [N] long
    normal: torch.Tensor  # [N x 3] canonical unit normals
    ell: torch.Tensor  # [N x 3] normalised local coordinates on ``prim``

    @property
    def hit(self) -> torch.Tensor:
        return self.prim >= 0

    @classmethod
    def misses(cls, n: int, dtype: torch.dtype) -> Hits:
        """``n`` rays that have hit nothing yet."""
        return cls(
            torch.full((n,), math.inf, dtype=dtype),
            torch.full((n,), -1, dtype=torch.long),
            torch.zeros((n, 3), dtype=dtype),
            torch.zeros((n, 3), dtype=dtype),
        )

    def keep_nearer(self, idx: torch.Tensor, prim: int, t: torch.Tensor, normal: torch.Tensor,
                    ell: torch.Tensor) -> None:
        """Record primitive ``prim``'s hits ``t [M]`` of rays ``idx [M]`` where they are nearer."""
        better = t < self.t[idx]
        j = idx[better]
        self.t[j] = t[better]
        self.prim[j] = prim
        self.normal[j] = normal[better]
        self.ell[j] = ell[better]


def raycast(instance: Instance, origin: torch.Tensor, dirs: torch.Tensor) -> Hits:
    """Intersect arbitrary rays ``origin + t dirs`` with the union of the instance's primitives
    (use :func:`raycast_grid` for whole images).

    Args:
        origin: ``[3]`` canonical ray origin (outside every primitive).
        dirs: ``[N x 3]`` canonical directions.
    """
    hits = Hits.misses(dirs.shape[0], dirs.dtype)
    dnorm2 = (dirs * dirs).sum(-1)
    for i, p in enumerate(instance.primitives):
        c, r = p.bounding_sphere()
        oc = torch.as_tensor(c, dtype=dirs.dtype) - origin
        proj = dirs @ oc
        # squared distance of the sphere centre from each ray's line; cull rays that miss it
        d2 = (oc @ oc) - proj * proj / dnorm2
        idx = torch.nonzero((d2 <= r * r) & (proj > 0)).flatten()
        if idx.numel() == 0:
            continue
        hits.keep_nearer(idx, i, *p.intersect(origin, dirs[idx]))
    return hits


def _prim_rects(instance: Instance, camera: Camera) -> list[tuple[float, float, float, float]]:
    """Pixel box ``(x0, x1, y0, y1)`` containing each primitive's projection."""
    out = []
    inf = math.inf
    for p in instance.primitives:
        xy, z = camera.project(torch.from_numpy(p.bound_points()))
        if bool((z <= 1e-9).any()):
            out.append((-inf, inf, -inf, inf))  # straddles the camera plane: test every ray
            continue
        lo, hi = xy.min(0).values, xy.max(0).values
        out.append((float(lo[0]) - 1, float(hi[0]) + 1, float(lo[1]) - 1, float(hi[1]) + 1))
    return out


def raycast_grid(instance: Instance, camera: Camera, xs: torch.Tensor, ys: torch.Tensor) -> Hits:
    """Cast the rays through every pixel ``(xs[j], ys[i])`` of a separable grid.

    Each primitive is only tested against the rays inside its projected box, so the cost is
    about the object's area, not the image's.

    Args:
        xs: ``[w]`` increasing pixel x coordinates; ys: ``[h]`` increasing pixel y coordinates.
    Returns:
        Hits over the ``h * w`` rays, row-major.
    """
    h, w = ys.numel(), xs.numel()
    dtype = xs.dtype
    hits = Hits.misses(h * w, dtype)
    origin = torch.as_tensor(camera.center, dtype=dtype)
    for i, (p, (x0, x1, y0, y1)) in enumerate(
        zip(instance.primitives, _prim_rects(instance, camera), strict=True)
    ):
        c0, c1 = int(torch.searchsorted(xs, x0)), int(torch.searchsorted(xs, x1, right=True))
        r0, r1 = int(torch.searchsorted(ys, y0)), int(torch.searchsorted(ys, y1, right=True))
        if c1 <= c0 or r1 <= r0:
            continue
        rows, cols = torch.arange(r0, r1), torch.arange(c0, c1)
        idx = (rows[:, None] * w + cols[None, :]).flatten()
        pix = torch.stack(
            [xs[cols][None, :].expand(len(rows), -1), ys[rows][:, None].expand(-1, len(cols))], -1
        ).reshape(-1, 2)
        hits.keep_nearer(idx, i, *p.intersect(origin, camera.rays(pix)))
    return hits


def template_points(template: Instance, hits: Hits) -> torch.Tensor:
    """``[N x 3]`` canonical points of the hits' local coordinates on the family template
    (zeros on misses)."""
    out = torch.zeros_like(hits.normal)
    for i, p in enumerate(template.primitives):
        m = hits.prim == i
        if m.any():
            out[m] = p.point(hits.ell[m])
    return out


def pixel_axes(height: int, width: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(xs [W], ys [H])`` of an image."""
    return (
        torch.arange(width, dtype=dtype) + 0.5,
        torch.arange(height, dtype=dtype) + 0.5,
    )


def square_axes(
    height: int, width: int, resolution: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image pixel coordinates ``(xs [R], ys [R])`` of the sample centres of a
    ``resolution``-square grid over the centred padded square (``FeatureGrid`` convention);
    samples with ``x`` outside ``[0, W)`` or ``y`` outside ``[0, H)`` fall in the padding."""
    s = float(max(height, width))
    r = torch.arange(resolution, dtype=dtype) + 0.5
    return r / resolution * s - (s - width) / 2.0, r / resolution * s - (s - height) / 2.0


def keypoint_visibility(
    instance: Instance, camera: Camera, rel_tol: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project the instance's keypoints and test them against the first surface on their ray.

    A keypoint is visible when it projects inside the image and nothing lies in front of it by
    more than ``rel_tol`` x the class half-extent plus its own thin-part tolerance.

    Returns:
        ``(pixels [K x 2], depth [K], visible [K] bool)``.
    """
    kp = instance.keypoints()
    xy, z = camera.project(kp)
    origin = torch.as_tensor(camera.center, dtype=kp.dtype)
    hits = raycast(instance, origin, camera.rays(xy))
    _, half = class_frame(instance.category)
    tol = torch.as_tensor(instance.keypoint_tolerance()) + rel_tol * half
    unoccluded = ~(hits.t < z - tol)
    inside = (
        (xy[:, 0] >= 0) & (xy[:, 0] < camera.width) & (xy[:, 1] >= 0) & (xy[:, 1] < camera.height)
    )
    return xy, z, unoccluded & inside & (z > 0)


def _smooth_field(rng: np.random.Generator, channels: int, height: int, width: int, cells: int):
    """``[C x H x W]`` smooth random field in about [0, 1] (bicubic upsampling of a coarse grid)."""
    g = torch.from_numpy(rng.uniform(0, 1, (1, channels, cells, cells)).astype(np.float32))
    return F.interpolate(g, size=(height, width), mode="bicubic", align_corners=False)[0]


def background(height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    """``[H x W x 3]`` float32 RGB in [0, 1]: smooth colour field, clutter shapes, fine grain."""
    base_col = torch.from_numpy(rng.uniform(0.15, 0.85, 3).astype(np.float32))
    img = base_col[:, None, None] * (0.7 + 0.6 * _smooth_field(rng, 3, height, width, 4))
    s = max(height, width)
    for _ in range(int(rng.integers(5, 15))):
        col = torch.from_numpy(rng.uniform(0.05, 0.95, 3).astype(np.float32))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.03, 0.25, 2) * s
        ellipse = rng.uniform() < 0.5
        x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, width)
        y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        yy = torch.arange(y0, y1, dtype=torch.float32)[:, None] + 0.5
        xx = torch.arange(x0, x1, dtype=torch.float32)[None, :] + 0.5
        if ellipse:
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        else:
            m = torch.ones((y1 - y0, x1 - x0), dtype=torch.bool)
        shade = (0.85 + 0.3 * (yy - cy) / (2 * ry)).clamp(0.6, 1.2)  # vertical gradient
        patch = img[:, y0:y1, x0:x1]
        img[:, y0:y1, x0:x1] = torch.where(m[None], col[:, None, None] * shade[None], patch)
    grain = _smooth_field(rng, 3, height, width, max(4, s // 6)) - 0.5
    img = img + 0.08 * grain
    return img.clamp(0, 1).permute(1, 2, 0)


@dataclass(frozen=True)
class Lighting:
    """Directional light in the camera frame plus ambient term."""

    direction: tuple[float, float, float]  # unit vector from the surface towards the light
    ambient: float
    diffuse: float
    specular: float


def sample_lighting(rng: np.random.Generator) -> Lighting:
    d = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-1.0, -0.2), -1.0])  # from above, front
    d /= np.linalg.norm(d)
    return Lighting(
        tuple(float(v) for v in d),
        float(rng.uniform(0.3, 0.45)),
        float(rng.uniform(0.6, 0.8)),
        float(rng.uniform(0.0, 0.25)),
    )


def shade(
    fam: Family,
    instance: Instance,
    camera: Camera,
    hits: Hits,
    palette: np.ndarray,
    light: Lighting,
    dirs: torch.Tensor,
) -> torch.Tensor:
    """``[N x 3]`` Lambert + Phong colours of hit rays (undefined on misses)."""
    parts = torch.as_tensor(instance.parts())
    part = parts[hits.prim.clamp_min(0)]
    pal = torch.as_tensor(palette)
    albedo = pal[part]
    if fam.decal is not None:
        for p in range(len(fam.part_names)):
            m = (part == p) & hits.hit
            if m.any():
                dm = fam.decal(p, hits.ell[m])
                idx = torch.nonzero(m).flatten()[dm]
                albedo[idx] = pal[-1]
    r = torch.as_tensor(camera.rotation, dtype=hits.normal.dtype)
    n = hits.normal @ r.T
    ld = torch.as_tensor(light.direction, dtype=n.dtype)
    lam = (n @ ld).clamp_min(0)
    v = -torch.nn.functional.normalize(dirs @ r.T, dim=-1)
    refl = 2 * (n @ ld)[:, None] * n - ld
    spec = (refl * v).sum(-1).clamp_min(0) ** 20
    col = albedo * (light.ambient + light.diffuse * lam)[:, None] + light.specular * spec[:, None]
    return col.clamp(0, 1)


def render_view(
    fam: Family,
    instance: Instance,
    camera: Camera,
    palette: np.ndarray,
    light: Lighting,
    bg_rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    """Render one image.

    Returns:
        dict with ``rgb [H x W x 3] uint8``, ``depth [H x W] float32`` (camera z, 0 on the
        background), ``mask [H x W] bool`` and ``part [H x W] uint8`` (0 = background, else
        part id + 1).
    """
    h, w = camera.height, camera.width
    xs, ys = pixel_axes(h, w)
    hits = raycast_grid(instance, camera, xs, ys)
    hit = hits.hit
    idx = torch.nonzero(hit).flatten()
    sub = Hits(hits.t[idx], hits.prim[idx], hits.normal[idx], hits.ell[idx])
    pix = torch.stack([xs[idx % w], ys[idx // w]], -1)
    col = shade(fam, instance, camera, sub, palette, light, camera.rays(pix)).float()
    rgb = background(h, w, bg_rng).reshape(-1, 3)
    rgb[idx] = col
    rgb8 = (rgb * 255 + 0.5).clamp(0, 255).to(torch.uint8).reshape(h, w, 3)
    depth = torch.where(hit, hits.t, torch.zeros_like(hits.t)).to(torch.float32)
    parts = torch.as_tensor(instance.parts())
    part = torch.where(hit, parts[hits.prim.clamp_min(0)] + 1, 0).to(torch.uint8)
    return {
        "rgb": rgb8,
        "depth": depth.reshape(h, w),
        "mask": hit.reshape(h, w),
        "part": part.reshape(h, w),
    }


def oracle_maps(
    instance: Instance, template: Instance, camera: Camera, resolution: int
) -> dict[str, torch.Tensor]:
    """What the simulated perception models see, on a ``resolution``-square grid over the
    centred padded square (the ``FeatureGrid`` convention).

    Returns:
        dict with ``coords [3 x R x R] float32`` normalised template coordinates (about
        [-1, 1], mirror plane x = 0; zeros off the object), ``part [R x R] uint8`` (0 = no
        object, else part id + 1) and ``depth [R x R] float32`` camera z (0 off the object).
    """
    r = resolution
    xs, ys = square_axes(camera.height, camera.width, r)
    cols = torch.nonzero((xs >= 0) & (xs < camera.width)).flatten()
    rows = torch.nonzero((ys >= 0) & (ys < camera.height)).flatten()
    hits = raycast_grid(instance, camera, xs[cols], ys[rows])
    c, half = class_frame(instance.category)
    tp = (template_points(template, hits) - torch.as_tensor(c)) / half
    hit = hits.hit.reshape(len(rows), len(cols))
    parts = torch.as_tensor(instance.parts())
    coords = torch.zeros((3, r, r), dtype=torch.float32)
    part = torch.zeros((r, r), dtype=torch.uint8)
    depth = torch.zeros((r, r), dtype=torch.float32)
    r0, c0 = int(rows[0]), int(cols[0])
    win = (slice(r0, r0 + len(rows)), slice(c0, c0 + len(cols)))
    coords[(slice(None), *win)] = torch.where(
        hit[None], tp.T.reshape(3, len(rows), len(cols)).float(), 0.0
    )
    part[win] = torch.where(hit, parts[hits.prim.clamp_min(0)].reshape(hit.shape) + 1, 0).to(
        torch.uint8
    )
    depth[win] = torch.where(hit, hits.t.reshape(hit.shape), 0.0).float()
    return {"coords": coords, "part": part, "depth": depth}
