"""Command-line overrides as Hydra reads them (``key=value``, ``+key=value``, ``~key``).

Every check of the command line that looks at an override's key or value reads it through
Hydra's own parser, so that lowres and Hydra never disagree on what an override says.
Tokens that are Hydra's flags (``--cfg``, ``-m``) or their arguments (``job``) are not
overrides and are passed over, and so is text Hydra cannot parse: Hydra refuses it when it
composes the config, with a message that names the syntax error.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException


@dataclass(frozen=True)
class Setting:
    """One override: ``text`` as given, its ``prefix`` (``""``, ``+``, ``++``, ``~``), its
    key or group without the prefix, its value as written, and whether it sweeps."""

    text: str
    prefix: str
    key: str
    value_text: str
    sweep: bool

    def value(self) -> Any:
        """The value as Hydra reads it (a list for ``[a,b]``, a number for ``1e-3``)."""
        return _parser().parse_override(self.text).value()


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def is_override(token: str) -> bool:
    """An override, not a flag (``--cfg``, ``-m``) nor a flag's argument (``job``)."""
    return not token.startswith("-") and ("=" in token or token.startswith("~"))


def read(token: str) -> Setting | None:
    """The override ``token`` as Hydra reads it; None for a flag, a flag's argument or
    text Hydra cannot parse."""
    if not is_override(token):
        return None
    try:
        parsed = _parser().parse_override(token)
    except HydraException:
        return None
    element = parsed.get_key_element()
    return Setting(
        text=token,
        prefix=element[: len(element) - len(element.lstrip("+~"))],
        key=parsed.key_or_group,
        value_text=token[len(element) + 1 :],
        sweep=parsed.is_sweep_override(),
    )


def read_all(tokens: Iterable[str]) -> list[Setting]:
    """The overrides among ``tokens``, each read by Hydra's parser."""
    return [s for s in map(read, tokens) if s is not None]


def key_of(token: str) -> str:
    """The key or group an override sets (``+task=x`` -> ``task``); "" for a flag."""
    setting = read(token)
    return setting.key if setting else ""
