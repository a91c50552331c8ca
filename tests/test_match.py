"""Keypoint transfer: readout, nearest-neighbour baseline and Eq. 14 (semalign3d.match)."""

from __future__ import annotations

import pytest
import torch

from semalign3d.match import nn_match, partner_redirect, readout, transfer
from semalign3d.models.base import DescriptorMap, FeatureGrid

GRID = FeatureGrid(40, 40, 4, 4)  # 10 px cells, centres at 5, 15, 25, 35


def _map(cells: dict[tuple[int, int], int], background: int = 2, c: int = 3) -> DescriptorMap:
    """A 4 x 4 map of one-hot descriptors: ``cells[(row, col)] = channel``."""
    f = torch.zeros(c, 4, 4)
    f[background] = 1
    for (r, col), ch in cells.items():
        f[:, r, col] = 0
        f[ch, r, col] = 1
    return DescriptorMap(f, GRID)


STATS = (torch.tensor([0.9, 0.9]), torch.tensor([0.1, 0.1]))


def test_eq14_hand_built_distinct_features():
    src = _map({(1, 1): 0, (1, 2): 1})
    trg = _map({(2, 3): 0, (2, 0): 1})
    phi = torch.eye(3)[:2]
    src_pts = torch.tensor([[15.0, 15.0], [25.0, 15.0]])
    trg_pts = torch.tensor([[35.0, 25.0], [5.0, 25.0]])
    q = torch.tensor([[15.0, 15.0], [25.0, 15.0]])
    pred, used = transfer(src, trg, q, src_pts, trg_pts, phi, *STATS, sigma=1.0)
    assert used.tolist() == [0, 1]
    assert pred.tolist() == [[35.0, 25.0], [5.0, 25.0]]


def test_eq14_spatial_term_resolves_symmetric_parts():
    """Both model points look alike (mirror-symmetric features): NN picks the wrong side for
    one query, Eq. 14 with a small sigma follows the aligned model."""
    src = _map({(1, 1): 0, (1, 2): 0})
    trg = _map({(2, 3): 0, (2, 0): 0})
    phi = torch.eye(3)[[0, 0]]
    src_pts = torch.tensor([[15.0, 15.0], [25.0, 15.0]])
    trg_pts = torch.tensor([[35.0, 25.0], [5.0, 25.0]])
    q = torch.tensor([[15.0, 15.0], [25.0, 15.0]])
    pred, used = transfer(src, trg, q, src_pts, trg_pts, phi, *STATS, sigma=0.1)
    assert used.tolist() == [0, 1]
    assert pred.tolist() == [[35.0, 25.0], [5.0, 25.0]]
    nn = nn_match(src, trg, q)
    assert nn.tolist() == [[5.0, 25.0], [5.0, 25.0]]  # ties go to the first cell


def test_eq14_semantics_beat_a_near_but_wrong_cell():
    """With a wide sigma (most categories: 1.0) the semantic likelihood decides."""
    src = _map({(0, 0): 0})
    trg = _map({(3, 3): 0})
    phi = torch.eye(3)[:1]
    pred, _ = transfer(src, trg, torch.tensor([[5.0, 5.0]]), torch.tensor([[5.0, 5.0]]),
                       torch.tensor([[5.0, 5.0]]), phi, STATS[0][:1], STATS[1][:1], sigma=1.0)
    assert pred.tolist() == [[35.0, 35.0]]


def test_eq14_gaussian_p_sem_and_refinement():
    src = _map({(1, 1): 0})
    trg = _map({(2, 2): 0})
    phi = torch.eye(3)[:1]
    args = (torch.tensor([[15.0, 15.0]]), torch.tensor([[15.0, 15.0]]),
            torch.tensor([[25.0, 25.0]]), phi, STATS[0][:1], STATS[1][:1])
    pred, _ = transfer(src, trg, *args, sigma=0.05, p_sem="gaussian")
    assert pred.tolist() == [[25.0, 25.0]]
    refined, _ = transfer(src, trg, *args, sigma=0.05, window=1, temperature=0.5)
    # the window is symmetric except for the spatial term, which keeps the centre dominant
    assert (refined - torch.tensor([[25.0, 25.0]])).abs().max() < 2.0


def test_eq14_bad_inputs():
    src = trg = _map({})
    phi = torch.eye(3)[:2]
    with pytest.raises(ValueError, match="mismatch"):
        transfer(src, trg, torch.zeros(1, 2), torch.zeros(3, 2), torch.zeros(2, 2), phi, *STATS,
                 sigma=0.1)
    pred, used = transfer(src, trg, torch.zeros(0, 2), torch.zeros(2, 2), torch.zeros(2, 2), phi,
                          *STATS, sigma=0.1)
    assert pred.shape == (0, 2) and used.shape == (0,)


def test_readout_argmax_and_soft_argmax():
    scores = torch.zeros(1, 4, 4)
    scores[0, 1, 2] = 1.0
    assert readout(scores, GRID).tolist() == [[25.0, 15.0]]
    # symmetric neighbours: the soft-argmax stays on the peak
    scores[0, 1, 1] = scores[0, 1, 3] = 0.5
    assert readout(scores, GRID, window=1, temperature=0.1)[0].tolist() == pytest.approx(
        [25.0, 15.0])
    # an asymmetric neighbour pulls it towards itself
    scores[0, 1, 3] = 0.9
    assert readout(scores, GRID, window=1, temperature=0.1)[0, 0] > 25.0
    assert readout(torch.zeros(0, 4, 4), GRID).shape == (0, 2)


def test_readout_ignores_padding_cells():
    grid = FeatureGrid(20, 40, 4, 4)  # top and bottom rows are padding
    scores = torch.zeros(1, 4, 4)
    scores[0, 0, 0] = 5.0  # a padding cell
    scores[0, 1, 3] = 1.0
    assert readout(scores, grid).tolist() == [[35.0, 5.0]]


def test_partner_redirect_exact_and_boundary():
    # binary-exact values, so the tie at the margin is exact
    cos = torch.tensor([0.5, -0.25, 0.125, 0.25, 0.75], dtype=torch.float64)
    partner = torch.tensor([1, 0, 2, 4, 3])  # 2 has no partner
    # 1: its partner leads by 0.75 > 0.5; 0 and 4 lead themselves; 3 trails 4 by exactly 0.5
    assert partner_redirect(cos, partner, 0.5).tolist() == [0, 0, 2, 3, 4]
    assert partner_redirect(cos, partner, 0.375).tolist() == [0, 0, 2, 4, 4]
    assert partner_redirect(cos, partner, 0.0).tolist() == [0, 0, 2, 4, 4]
    assert partner_redirect(cos, partner, 0.75).tolist() == [0, 1, 2, 3, 4]  # a tie stays
    # the mirror twin (keypoint k where partner[k] is: cosines permuted) lands every keypoint
    # on the same place as the true fit when every pair is decided (|difference| > margin)
    red = partner_redirect(cos, partner, 0.2)
    red_twin = partner_redirect(cos[partner], partner, 0.2)
    assert partner[red_twin].tolist() == red.tolist()


def test_partner_redirect_empty_and_bad_shapes():
    empty = torch.zeros(0, dtype=torch.long)
    assert partner_redirect(torch.zeros(0), empty, 0.4).shape == (0,)
    with pytest.raises(ValueError, match=r"\[K\]"):
        partner_redirect(torch.zeros(3), torch.arange(2), 0.4)
    with pytest.raises(ValueError, match="margin"):
        partner_redirect(torch.zeros(2), torch.tensor([1, 0]), -0.1)
