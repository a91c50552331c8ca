import torch
import torch.nn.functional as F

from semalign3d.match import nn_match, readout
from semalign3d.models.base import DescriptorMap, FeatureGrid


def test_feature_grid_hand_values_non_square():
    g = FeatureGrid(height=50, width=100, h=4, w=4)  # pad_y = 25 px, cells are 25 px
    assert g.pad == (0.0, 25.0)
    c = g.cell_centers().reshape(4, 4, 2)
    assert torch.allclose(c[0, 0], torch.tensor([12.5, -12.5]))
    assert torch.allclose(c[2, 3], torch.tensor([87.5, 37.5]))
    assert g.valid_cells()[:, 0].tolist() == [False, True, True, False]
    xy = torch.tensor([[87.5, 37.5], [3.0, 4.0]])
    assert torch.allclose(g.grid_to_pixels(g.pixels_to_grid(xy)), xy)
    assert torch.allclose(g.pixels_to_grid(xy[:1]), torch.tensor([[3.0, 2.0]]))


def test_readout_ignores_padding_and_soft_argmax_is_centred():
    g = FeatureGrid(50, 100, 4, 4)
    s = torch.zeros(1, 4, 4)
    s[0, 0, 0] = 5.0  # padding cell: must be ignored
    s[0, 1, 2] = 1.0
    assert torch.allclose(readout(s, g), torch.tensor([[62.5, 12.5]]))
    sym = torch.full((1, 4, 4), -50.0)  # only row 1 carries weight
    sym[0, 1, 1] = sym[0, 1, 3] = 0.5
    sym[0, 1, 2] = 1.0
    out = readout(sym, g, window=1, temperature=1.0)
    assert torch.allclose(out, torch.tensor([[62.5, 12.5]]), atol=1e-5)


def test_nn_match_recovers_a_shifted_map():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(16, 8, 8, generator=g), dim=0)
    grid = FeatureGrid(80, 80, 8, 8)
    src = DescriptorMap(feats, grid)
    trg = DescriptorMap(torch.roll(feats, shifts=(1, 2), dims=(1, 2)), grid)
    kps = torch.tensor([[15.0, 25.0], [45.0, 35.0]])  # cell centres (1, 2)->(3, 4) etc.
    pred = nn_match(src, trg, kps)
    assert torch.allclose(pred, kps + torch.tensor([20.0, 10.0]))
    assert nn_match(src, trg, torch.zeros(0, 2)).shape == (0, 2)
