"""Where data files are read from: the shipped sample, or a local copy of the official files."""

from __future__ import annotations

from pathlib import Path

from lowres.errors import LowresError

# Real excerpts of every benchmark, shipped in the package (licences in its README).
SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "resources" / "sample"


def data_root(source: str, root: str) -> Path:
    """The folder holding xquad/, mlqa/, pawsx/, squad/ for ``data.source`` and ``data.root``."""
    if source == "sample":
        return SAMPLE_ROOT
    path = Path(root)
    if not path.is_dir():
        raise LowresError(
            f"data.root={root!r} does not exist or is not a folder; point it at the folder "
            "that holds the benchmark files (xquad/, mlqa/MLQA_V1/, pawsx/, squad/), e.g. "
            "data.root=../shared/data, or use data.source=sample."
        )
    return path
