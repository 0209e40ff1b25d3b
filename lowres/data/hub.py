"""Load a benchmark split from the Hugging Face Hub, turning every fetch failure into HubError.

Hub ids used by lowres, all parquet-backed so that ``datasets`` >= 4 (which refuses dataset
scripts) can read them:

- XQuAD: ``google/xquad``, configs ``xquad.XX``, split ``validation``.
- SQuAD v1.1: ``rajpurkar/squad``, split ``validation``.
- PAWS-X: ``google-research-datasets/paws-x``, configs ``en``, ``de``, ..., splits
  ``train``/``validation``/``test``.
- MLQA: ``facebook/mlqa`` (configs ``mlqa.CTX.Q``) is still script-only: its main branch holds
  just ``mlqa.py``, so ``datasets`` >= 4 raises "Dataset scripts are no longer supported". A
  parquet conversion is open there as a pull request (discussion #5) and no
  ``refs/convert/parquet`` branch is documented for it. ``google/xtreme`` carries the same MLQA
  files as parquet, configs ``MLQA.CTX.Q`` with splits ``validation`` (= MLQA dev, 1148 en-en
  questions) and ``test``, so ``facebook/mlqa`` requests for ``mlqa.CTX.Q`` are served from
  there. This is from the Hub's pages and issue threads; it was not fetched from this sandbox.
"""

from __future__ import annotations

from typing import Any

from lowres.errors import HubError

MLQA_SCRIPT_REPO = "facebook/mlqa"
MLQA_PARQUET_REPO = "google/xtreme"

_LOCAL_LAYOUTS = {
    "google/xquad": "<root>/xquad/xquad.XX.json",
    "rajpurkar/squad": "<root>/squad/dev-v1.1.json",
    MLQA_SCRIPT_REPO: "<root>/mlqa/MLQA_V1/dev/dev-context-XX-question-YY.json",
    MLQA_PARQUET_REPO: "<root>/mlqa/MLQA_V1/dev/dev-context-XX-question-YY.json",
    "google-research-datasets/paws-x": (
        "<root>/pawsx/xtreme-dev/dev-XX.tsv (or the official <root>/pawsx/official/XX/*.tsv)"
    ),
}


def load_hub_split(path: str, name: str | None, split: str) -> Any:
    """``datasets.load_dataset(path, name, split=split)``, with failures raised as HubError."""
    # Imported here: datasets takes seconds to import and most commands never touch the Hub.
    import datasets

    repo, config = _parquet_source(path, name)
    try:
        return datasets.load_dataset(repo, config, split=split)
    except RuntimeError as exc:
        if "scripts are no longer supported" not in str(exc):
            raise
        raise HubError(
            f"The {_what(path, name, split, repo, config)} is published only as a loading "
            f"script, which datasets {datasets.__version__} no longer runs ({_one_line(exc)}). "
            f"Use a parquet copy of the dataset on the Hub (for MLQA, config 'mlqa.CTX.Q' is read "
            f"from {MLQA_PARQUET_REPO}), or local files: {_local_hint(path)}"
        ) from exc
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as exc:
        # OSError covers offline mode, unreachable hosts, missing or gated repos and missing
        # files; ValueError is an unknown config or split.
        raise HubError(
            f"Could not load {_what(path, name, split, repo, config)} from the Hugging Face Hub "
            f"({type(exc).__name__}: {_one_line(exc)}). Check the dataset id, config, split, "
            f"your network and that HF_HUB_OFFLINE is not set, or use local files: "
            f"{_local_hint(path)}"
        ) from exc


def _parquet_source(path: str, name: str | None) -> tuple[str, str | None]:
    if path == MLQA_SCRIPT_REPO and name and name.startswith("mlqa."):
        return MLQA_PARQUET_REPO, "MLQA." + name.removeprefix("mlqa.")
    return path, name


def _what(path: str, name: str | None, split: str, repo: str, config: str | None) -> str:
    what = f"dataset '{path}' (config '{name}', split '{split}')"
    if (repo, config) != (path, name):
        what += f", read as its parquet copy '{repo}' config '{config}',"
    return what


def _local_hint(path: str) -> str:
    layout = _LOCAL_LAYOUTS.get(path, "the dataset's files under <root>")
    return f"set data.source=local data.root=<folder> with the layout {layout}."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
