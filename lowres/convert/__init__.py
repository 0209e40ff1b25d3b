"""Models shipped in other formats, converted once into cached transformers folders.

``backbone.loader=converted`` names one of :data:`CONVERTERS` in ``backbone.path``; the
converter returns a folder that ``from_pretrained`` loads, converting on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lowres.convert import me5_small

CONVERTERS: dict[str, Callable[[], Path]] = {me5_small.NAME: me5_small.ensure_converted}
