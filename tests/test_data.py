import json
import shutil

import pytest
import torch

from semalign3d.data import flips
from semalign3d.data.records import DataError
from semalign3d.data.spair import SPairDataset, load_rgb


def _nan_equal(a, b):
    return torch.equal(torch.nan_to_num(a, nan=-7.0), torch.nan_to_num(b, nan=-7.0))


@pytest.mark.parametrize("category", flips.categories())
def test_flip_permutation_is_an_involution(category):
    perm = flips.flip_permutation(category)
    assert perm.numel() == flips.num_keypoints(category)
    assert torch.equal(perm[perm], torch.arange(perm.numel()))


@pytest.mark.parametrize("category", flips.categories())
def test_flip_twice_is_identity(category):
    from semalign3d.data.records import AnnotatedImage

    k = flips.num_keypoints(category)
    g = torch.Generator().manual_seed(k)
    # SPair keypoints are integer pixels, so flipping twice is exact
    kps = (torch.rand(k, 2, generator=g) * torch.tensor([299.0, 199.0])).round()
    kps[::3] = float("nan")
    img = AnnotatedImage("x", category, None, 300, 200, (10.0, 20.0, 200.0, 150.0), kps,
                         ~torch.isnan(kps[:, 0]))
    twice = flips.flip_image(flips.flip_image(img))
    assert _nan_equal(twice.keypoints, img.keypoints)
    assert torch.equal(twice.visible, img.visible)
    assert twice.bbox == img.bbox and twice.flipped is False
    once = flips.flip_image(img)
    assert once.flipped and once.bbox == (100.0, 20.0, 290.0, 150.0)


def test_flip_keypoints_hand_case():
    # chair swaps (0, 1): keypoint 0 at x=10 becomes keypoint 1 at x = W - 10
    kps = torch.full((14, 2), float("nan"))
    kps[0] = torch.tensor([10.0, 5.0])
    out = flips.flip_keypoints(kps, 100, flips.flip_permutation("chair"))
    assert torch.equal(out[1], torch.tensor([90.0, 5.0])) and torch.isnan(out[0]).all()


def test_partner_positions_hand_case():
    # chair swaps (0, 1), (2, 3), ...; a model with ids [1, 4, 0, 5, 9] pairs 1<->0 and 4<->5,
    # id 9's partner (8) is not modelled so it maps to itself
    pos = flips.partner_positions("chair", torch.tensor([1, 4, 0, 5, 9]))
    perm = flips.flip_permutation("chair")
    assert int(perm[9]) == 8
    assert pos.tolist() == [2, 3, 0, 1, 4]
    assert torch.equal(pos[pos], torch.arange(5))


def test_unknown_category():
    with pytest.raises(DataError, match="unknown category 'chiar'"):
        flips.num_keypoints("chiar")


def test_reader_on_spair_mini(spair_mini):
    ds = SPairDataset(spair_mini)
    assert ds.categories == ["aeroplane", "cow", "dog", "horse", "motorbike", "pottedplant"]
    names = ds.pair_names("test")
    assert len(names) == 12 and ds.pair_names("test", "cow") == [
        "000009-2007_005797-2009_003189:cow",
        "000010-2009_003189-2007_005797:cow",
    ]
    pair = ds.pair("test", names[8])
    assert pair.kps_ids == (2, 4, 8, 9, 10, 11, 15) and pair.trg_bbox == (63.0, 150.0, 216.0, 414.0)
    src = ds.image("cow", pair.source)
    assert (src.width, src.height) == (500, 375) and src.num_keypoints == 21
    # the pair's source keypoints are the image annotation's keypoints of the pair's ids
    assert torch.equal(src.keypoints[list(pair.kps_ids)], pair.src_kps)
    rgb = load_rgb(src)
    assert rgb.shape == (3, 375, 500) and rgb.dtype == torch.uint8
    flipped = load_rgb(flips.flip_image(src))
    assert torch.equal(flipped, rgb.flip(-1))


def _copy_mini(spair_mini, tmp_path):
    root = tmp_path / "spair"
    shutil.copytree(spair_mini, root, ignore=shutil.ignore_patterns("pairs-*.json", "Masks-ODISE"))
    return root


def test_bad_inputs_name_the_file(spair_mini, tmp_path):
    root = _copy_mini(spair_mini, tmp_path)
    ann = root / "ImageAnnotation" / "cow" / "2007_005797.json"
    data = json.loads(ann.read_text())
    # a JSON lacking a field
    ann.write_text(json.dumps({k: v for k, v in data.items() if k != "bndbox"}))
    with pytest.raises(DataError, match="2007_005797.json: missing field 'bndbox'"):
        SPairDataset(root).image("cow", "2007_005797")
    # a bbox outside the image
    ann.write_text(json.dumps({**data, "bndbox": [1, 107, 900, 365]}))
    with pytest.raises(DataError, match="outside the 500x375 image"):
        SPairDataset(root).image("cow", "2007_005797")
    # keypoints out of bounds
    kps = dict(data["kps"])
    kps["2"] = [2000, 5]
    ann.write_text(json.dumps({**data, "kps": kps}))
    with pytest.raises(DataError, match=r"keypoints \[2\] lie outside"):
        SPairDataset(root).image("cow", "2007_005797")
    # corrupt JSON
    ann.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        SPairDataset(root).image("cow", "2007_005797")
    # a missing / corrupt image
    ann.write_text(json.dumps(data))
    img = SPairDataset(root).image("cow", "2007_005797")
    img.path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot decode image"):
        load_rgb(img)
    img.path.unlink()
    with pytest.raises(DataError, match="image file not found"):
        load_rgb(img)


def test_bad_root_split_and_empty_split(spair_mini, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SPairDataset(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="missing 'JPEGImages/'"):
        SPairDataset(tmp_path / "half")
    ds = SPairDataset(spair_mini)
    with pytest.raises(DataError, match="unknown split"):
        ds.pair_names("train")
    with pytest.raises(DataError, match="split directory not found"):
        ds.pair_names("trn")
    assert ds.pair_names("test", "chair") == []
