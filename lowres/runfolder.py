"""The run folder: where a run's config, metrics, predictions and checkpoint live."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        from lowres.distributed import is_main_process

        self.path = Path(path)
        # In a data-parallel run every rank holds a RunFolder, but only rank 0 writes.
        self.writes = is_main_process()
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_job(cls, output_dir: str | Path | None = None) -> RunFolder:
        """The given folder, or the one Hydra made for this job."""
        if output_dir is None:
            from hydra.core.hydra_config import HydraConfig

            output_dir = HydraConfig.get().runtime.output_dir
        return cls(output_dir)

    def finished(self) -> bool:
        return (self.path / METRICS_FILE).is_file()

    @staticmethod
    def finished_at(path: str | Path) -> bool:
        """Whether ``path`` holds a finished run, without creating the folder."""
        return (Path(path) / METRICS_FILE).is_file()

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.path / METRICS_FILE).read_text())

    def write_json(self, relative: str, data: Any) -> Path:
        """Write atomically, so an interrupted run never leaves a half-written file."""
        target = self.path / relative
        if not self.writes:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=2)
        os.replace(temporary, target)
        return target

    def write_jsonl(self, relative: str, rows: list[dict[str, Any]]) -> Path:
        target = self.path / relative
        if not self.writes:
            return target
        target.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return target
