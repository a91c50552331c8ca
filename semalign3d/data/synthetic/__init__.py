"""Procedurally generated object-class dataset with exact ground truth (the embedded default).

Mirror-symmetric parametric shape families (``shapes``) are ray-cast (``render``) from random
cameras (``camera``) and written in the SPair-71k layout (``generate``), together with what the
simulated perception models see (``Oracle/``, read by ``models.oracle.OracleEncoder`` and
``models.synthetic_depth.SyntheticDepth``) and ground-truth sidecars (``Synthetic/``).
"""

from semalign3d.data.synthetic.generate import (
    DepthKnobs,
    OracleKnobs,
    SynthConfig,
    generate_dataset,
    read_metadata,
)
from semalign3d.data.synthetic.shapes import FAMILIES, categories, family

__all__ = [
    "FAMILIES",
    "DepthKnobs",
    "OracleKnobs",
    "SynthConfig",
    "categories",
    "family",
    "generate_dataset",
    "read_metadata",
]
