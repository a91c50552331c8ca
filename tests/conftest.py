from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPAIR_MINI = SHARED / "data" / "spair-mini"


@pytest.fixture(scope="session")
def spair_mini() -> Path:
    if not SPAIR_MINI.is_dir():
        pytest.skip(f"real-data test: {SPAIR_MINI} is absent (CI provides ../shared)")
    return SPAIR_MINI


def pytest_configure(config):
    # One intra-op thread: bitwise-reproducible optimiser runs across processes (multi-threaded
    # reductions change the last bits, which a 1000-step optimisation amplifies), and no
    # oversubscription when CI's two cores run a kernel beside pytest.
    import torch

    from semalign3d.process import keep_freed_memory

    torch.set_num_threads(1)
    keep_freed_memory()  # also for the chapters' papermill kernels
