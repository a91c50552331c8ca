import math

import torch

from semalign3d.geometry import (
    backproject,
    principal_point,
    procrustes_align,
    project,
    to_normalized,
    to_pixels,
)


def test_principal_point_hand_values():
    assert principal_point(375, 500) == (0.5, 0.375)
    assert principal_point(500, 375) == (0.375, 0.5)


def test_project_hand_value():
    pts = torch.tensor([[[0.2, -0.1, 2.0]]])
    uv = project(pts, torch.tensor([5.0]), torch.tensor([[0.5, 0.375]]))
    assert torch.allclose(uv, torch.tensor([[[0.5 + 5 * 0.1, 0.375 - 5 * 0.05]]]))


def test_projection_of_backprojection_is_identity():
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(3, 50, 2, generator=g, dtype=torch.float64)
    z = 0.5 + torch.rand(3, 50, generator=g, dtype=torch.float64)
    f = torch.tensor([2.0, 5.0, 9.0], dtype=torch.float64)
    pp = torch.rand(3, 2, generator=g, dtype=torch.float64)
    x = backproject(uv, z, f, pp)
    assert torch.allclose(project(x, f, pp), uv, atol=1e-12)
    assert torch.allclose(x[..., 2], z)


def test_pixel_normalisation_round_trip():
    xy = torch.tensor([[10.0, 20.0], [499.0, 374.0]])
    assert torch.allclose(to_pixels(to_normalized(xy, 375, 500), 375, 500), xy)


def test_procrustes_recovers_similarity_and_rejects_reflection():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(12, 3, generator=g, dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    r = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    tgt = 2.5 * src @ r.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    aligned, rms = procrustes_align(src, tgt)
    assert rms < 1e-10 and torch.allclose(aligned, tgt, atol=1e-10)
    mirrored = tgt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    _, rms_proper = procrustes_align(src, mirrored)
    _, rms_reflect = procrustes_align(src, mirrored, allow_reflection=True)
    assert rms_reflect < 1e-10 < rms_proper


def test_similarity_fit_recovers_a_batch_of_similarities():
    from semalign3d.align.hypotheses import random_rotations
    from semalign3d.geometry import similarity_fit

    g = torch.Generator().manual_seed(3)
    src = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    rot = random_rotations(5, 1)
    scale = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    shift = torch.randn(5, 3, generator=g, dtype=torch.float64)
    dst = scale[:, None, None] * src @ rot.transpose(-1, -2) + shift[:, None]
    dst[1, 2] = float("nan")  # a missing point is ignored
    s, r, t = similarity_fit(src, dst)
    torch.testing.assert_close(s, scale)
    torch.testing.assert_close(r, rot)
    torch.testing.assert_close(t, shift)
    # a mirrored target: the proper fit stays a rotation, the improper one is exact
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    _, r_p, _ = similarity_fit(src[0], src[0] @ mirror)
    _, r_i, _ = similarity_fit(src[0], src[0] @ mirror, allow_reflection=True)
    assert torch.det(r_p) > 0 and torch.allclose(r_i, mirror)
    # a zero-weighted outlier and an Inf row change nothing; a batch of mirrors stays proper
    noisy = dst.clone()
    noisy[0, 0] += 100.0
    noisy[2, 3] = float("inf")
    w = torch.ones(5, 7, dtype=torch.float64)
    w[0, 0] = 0.0
    s_w, r_w, t_w = similarity_fit(src, noisy, w)
    torch.testing.assert_close(r_w, rot)
    torch.testing.assert_close(s_w, scale)
    _, r_b, _ = similarity_fit(src, src @ mirror)
    assert (torch.det(r_b) > 0).all()
