"""What the paper reports and what our specification knows (method.md), as data for the book.

``TABLE1`` is the paper's Table 1 (PCK@0.1 on SPair-71k, per-image, bbox threshold) [T1];
``SPEC_ITEMS`` lists the method's parts with the provenance tags of method.md §0; ``UNKNOWNS``
are method.md §5.2's open questions with the configuration options that implement the
candidate answers (dotted paths into :class:`semalign3d.config.Config`).
"""

from __future__ import annotations

from semalign3d.data.flips import categories

#: Table 1 column order (SPair-71k category names) followed by the overall column
COLUMNS: tuple[str, ...] = (*categories(), "all")
#: the paper's short column headers
SHORT: dict[str, str] = {
    "aeroplane": "Aero", "bicycle": "Bike", "bird": "Bird", "boat": "Boat", "bottle": "Bottle",
    "bus": "Bus", "car": "Car", "cat": "Cat", "chair": "Chair", "cow": "Cow", "dog": "Dog",
    "horse": "Horse", "motorbike": "Motor", "person": "Person", "pottedplant": "Plant",
    "sheep": "Sheep", "train": "Train", "tvmonitor": "TV", "all": "All",
}

#: method -> (supervision "U"/"S", PCK@0.1 in COLUMNS order), as printed in Table 1 [T1]
_T1: dict[str, tuple[str, str]] = {
    "ASIC": ("U", "57.9 25.2 68.1 24.7 35.4 28.4 30.9 54.8 21.6 "
                "45.0 47.2 39.9 26.2 48.8 14.5 24.9 40.9 24.6 36.9"),
    "DINOv2+NN": ("U", "72.7 62.0 85.2 41.3 40.4 52.3 51.5 71.1 36.2 "
                     "67.1 64.6 67.6 61.0 68.2 30.7 62.0 54.3 24.2 55.6"),
    "DIFT": ("U", "63.5 54.5 80.8 34.5 46.2 52.7 48.3 77.7 39.0 "
                "76.0 54.9 61.3 53.3 46.0 57.8 57.1 71.1 63.4 57.7"),
    "SD+DINOv2": ("U", "73.0 64.1 86.4 40.7 52.9 55.0 53.8 78.6 45.5 "
                     "77.3 64.7 69.7 63.3 69.2 58.4 67.6 66.2 53.5 64.0"),
    "SphericalMaps": ("U", "74.8 64.5 87.1 45.6 52.7 77.8 71.4 82.4 47.7 "
                         "82.0 67.3 73.9 67.6 60.0 49.9 69.8 78.5 59.1 67.3"),
    "SCOT": ("S", "34.9 20.7 63.8 21.1 43.5 27.3 21.3 63.1 20.0 "
                "42.9 42.5 31.1 29.8 35.0 27.7 24.4 48.4 40.8 35.6"),
    "PMNC": ("S", "54.1 35.9 74.9 36.5 42.1 48.8 40.0 72.6 21.1 "
                "67.6 58.1 50.5 40.1 54.1 43.3 35.7 74.5 59.9 50.4"),
    "SCorrSAN": ("S", "57.1 40.3 78.3 38.1 51.8 57.8 47.1 67.9 25.2 "
                    "71.3 63.9 49.3 45.3 49.8 48.8 40.3 77.7 69.7 55.3"),
    "CATs++": ("S", "60.6 46.9 82.5 41.6 56.8 64.9 50.4 72.8 29.2 "
                  "75.8 65.4 62.5 50.9 56.1 54.8 48.2 80.9 74.9 59.8"),
    "DHF": ("S", "74.0 61.0 87.2 40.7 47.8 70.0 74.4 80.9 38.5 "
               "76.1 60.9 66.8 66.6 70.3 58.0 54.3 87.4 60.3 64.9"),
    "SD+DINOv2 (S)": ("S", "81.2 66.9 91.6 61.4 57.4 85.3 83.1 90.8 54.5 "
                         "88.5 75.1 80.2 71.9 77.9 60.7 68.9 92.4 65.8 74.6"),
    "GeoAware (AP-10k P.T.)": ("S", "92.0 76.1 97.2 70.4 70.5 91.4 89.7 92.7 73.4 "
                                  "95.0 90.5 87.7 81.8 91.6 82.3 83.4 96.5 85.3 85.6"),
    "SemAlign3D": ("S", "95.6 80.4 94.0 66.5 82.2 92.6 92.5 91.4 88.3 "
                      "96.1 91.3 87.4 84.2 92.3 87.7 85.3 95.9 96.1 88.9"),
}


def _parse_table1() -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for method, (_, values) in _T1.items():
        nums = [float(v) for v in values.split()]
        if len(nums) != len(COLUMNS):
            raise ValueError(f"Table 1 row '{method}' has {len(nums)} values, not {len(COLUMNS)}")
        rows[method] = dict(zip(COLUMNS, nums, strict=True))
    return rows


#: method -> column -> PCK@0.1 in percent [T1]
TABLE1: dict[str, dict[str, float]] = _parse_table1()
#: method -> "U" (unsupervised) or "S" (supervised), as in Table 1
SUPERVISION: dict[str, str] = {method: sup for method, (sup, _) in _T1.items()}
GEOAWARE = "GeoAware (AP-10k P.T.)"
OURS_PAPER = "SemAlign3D"

#: provenance tags of method.md §0
TAGS: dict[str, str] = {
    "P": "paper abstract/intro or project website (verified text)",
    "T1": "read off the paper's Table 1 image",
    "S5": "supplementary Table 5 (hyper-parameters)",
    "C": "official code, part 1 (shape-prior generation)",
    "N": "third-party AI paper note (unverified paraphrase)",
    "R": "our reconstruction (not verified against the paper)",
}

#: (method.md section, item, tags) for the main parts of the method
SPEC_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("1", "premise: LVM features are semantic but geometry-unaware; fails on extreme views", "P"),
    ("2.0", "normalised pinhole camera, f^-1 stored and optimised, init 0.2", "C"),
    ("2.0", "horizontal flips as extra training images, keypoint ids permuted", "C"),
    ("2.1", "prior built only from the unique images of the `trn` pairs (~55 per class)", "P, C"),
    ("2.2", "descriptors: GeoAware-SC SD+DINOv2 aggregated, 768 x 60 x 60, unit norm", "C"),
    ("2.3", "monocular depth: Depth-Anything-V2-Large disparity", "C, N"),
    ("2.3", "pseudo-depth z = 1 - 0.3 d / max d ('NEW' in the code)", "C"),
    ("2.4", "train masks: SAM prompted with GT keypoints; keypoints snapped into the mask", "C"),
    ("2.4", "test-time masks for L_background: source unknown", "R"),
    ("2.5", "per-image focal length minimising cross-image variance of angles/ratios", "P, N, C"),
    ("2.6", "Beta distributions of edge-pair angles and length ratios", "P, C"),
    ("2.6", "triangle + apex ('tet') relations (maybe added after the paper)", "C"),
    ("2.7", "sparse canonical cloud: greedy grid placement, then joint refinement", "P, C"),
    ("2.8", "keypoint features: mean unit descriptor per keypoint id", "C"),
    ("2.9", "dense cloud: barycentric transfer, k-means (1000), neighbour-averaged features",
     "P, C"),
    ("2.10", "deformation: dense points follow keypoints through tetrahedra", "C, N"),
    ("2.11", "alignment energy: reconstruct + geom + background + depth terms", "P"),
    ("2.11", "exact likelihood p_sem x p_spatial, log form, pixel set", "R"),
    ("2.11", "annealed sigma and weight schedules, AdamW lr 5e-3, 1000 steps", "S5"),
    ("2.11", "focal length optimised at test time", "N"),
    ("2.11", "initialisation: starts fitted to the image (or cube rotations), selection", "R"),
    ("2.12", "matching through the aligned model (Eq. 14), category-dependent sigma", "S5, N"),
    ("2.12", "Eq. 14 details: sparse vs dense points, sub-patch refinement", "R"),
    ("3", "metric: PCK@0.1 of the target bbox, per image, SPair-71k test split", "C, T1"),
    ("4.1", "per-category results of all methods", "T1"),
)

#: (method.md §5.2 number, question, config options implementing the candidates)
UNKNOWNS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "formula of p_sem (Gaussian in similarity or calibrated per point)",
     ("align.p_sem", "align.sigma_sem")),
    (2, "Eq. 5/6 over pixels or over points; which pixel set",
     ("align.dense_likelihood", "align.sparse_likelihood", "align.sparse_cells",
      "masks.test_source")),
    (3, "units of sigma (we use fractions of the longest image side)", ()),
    (4, "form of L_background and the source of test-time masks",
     ("masks.test_source", "align.foreground_prototypes", "prior.object_prototypes",
      "align.foreground_floor", "align.foreground_threshold", "align.mask_blur",
      "align.background_floor")),
    (5, "target depth z-bar of L_depth and keypoint weights",
     ("align.depth_target", "align.depth_target_value")),
    (6, "initialisation: starting poses (fitted or cube rotations), mirrors, where the schedules "
        "start, focal length at test time",
     ("align.n_fitted_starts", "align.fit_candidates", "align.fit_sigma", "align.n_rotations",
      "align.mirror_hypotheses", "align.schedule_skip", "align.optimize_focal",
      "align.focal_init_inv")),
    (7, "whether L_geom uses the triangle + apex relations", ("align.geom_tets", "prior.use_tets")),
    (8, "Eq. 14: sparse or dense model points, sub-patch refinement, keypoints hidden in a fit",
     ("align.match_points", "align.soft_argmax_window", "align.soft_argmax_temperature",
      "align.partner_swap", "align.partner_margin")),
    (9, "the paper's numbering of Eqs. 1-4, 6-8, 10-12 (documentation only)", ()),
    (10, "'All' category-averaged or pair-weighted; PCK per image or per keypoint",
     ("eval.comparison",)),
    (11, "results beyond Table 1 (PCK@0.05/0.01, PF-Pascal, AP-10k, ablations, runtime)",
     ("eval.alphas",)),
    (12, "whether the paper used the z = 1 - 0.3 d / max d conversion", ("depth.disparity_span",)),
    (13, "number of dense clusters and the density threshold",
     ("prior.n_clusters", "prior.density_threshold", "prior.feature_neighbors")),
)
