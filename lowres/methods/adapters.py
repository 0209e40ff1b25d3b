"""Adapters: PEFT tuners injected into the backbone (the entries of ``lowres.registry.ADAPTERS``).

Each entry says which modules it adapts when ``adapter.target_modules`` is empty and which
PEFT config it injects. PEFT's own config classes hold each tuner's settings, so
``adapter.options`` passes any of them through (``use_dora: true`` makes LoRA DoRA), and
``adapter.kind=peft`` with ``adapter.peft_type`` selects any tuner PEFT can inject into a
model (LoHa, LoKr, VeRA, ...). Every PEFT adapter trains beside the task head and is
exported as a PEFT folder (:mod:`lowres.methods.peft_export`) when nothing else trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peft import (
    PEFT_TYPE_TO_CONFIG_MAPPING,
    IA3Config,
    LoraConfig,
    PeftConfig,
    PeftType,
    PromptLearningConfig,
)
from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

from lowres.errors import ConfigError
from lowres.schema import AdapterConfig


@dataclass(frozen=True)
class NoAdapter:
    """``adapter.kind=none``: the backbone as it is."""

    peft: bool = False

    def default_targets(self, adapter: AdapterConfig, model, backbone_targets) -> list[str]:
        return []

    def peft_config(self, adapter: AdapterConfig) -> PeftConfig | None:
        return None


@dataclass(frozen=True)
class PeftAdapter:
    """A PEFT tuner: ``config(adapter)`` builds its PEFT config from ``adapter``'s values."""

    peft: bool = True

    def default_targets(self, adapter: AdapterConfig, model, backbone_targets) -> list[str]:
        """[]: PEFT chooses the modules for the model's type."""
        return []

    def settings(self, adapter: AdapterConfig) -> dict[str, Any]:
        """This tuner's config values from the shared adapter keys (beyond ``options``)."""
        return {}

    def config_class(self, adapter: AdapterConfig) -> type[PeftConfig]:
        raise NotImplementedError

    def peft_config(self, adapter: AdapterConfig) -> PeftConfig:
        values = {**self.settings(adapter), **dict(adapter.options)}
        if adapter.target_modules:
            values["target_modules"] = list(adapter.target_modules)
        config_class = self.config_class(adapter)
        try:
            return config_class(**values)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"adapter.kind={adapter.kind}: PEFT's {config_class.__name__} refused "
                f"{values} ({error}). adapter.options takes {config_class.__name__}'s "
                "keyword arguments; see PEFT's documentation of that class."
            ) from None


@dataclass(frozen=True)
class Lora(PeftAdapter):
    """LoRA (DoRA with ``adapter.options.use_dora=true``) on the attention projections, or on
    every linear layer of the blocks with ``adapter.layers=all_linear``."""

    def default_targets(self, adapter: AdapterConfig, model, backbone_targets) -> list[str]:
        # Imported here: lowres.methods.build imports this module for the injection itself.
        from lowres.methods.build import block_linear_names, lora_targets_of

        # LoRA's modules differ by architecture (BERT query/value, Llama q_proj/v_proj), so
        # the backbone supplies the default; a local folder (lora_targets: []) has them found
        # in the loaded model, as has adapter.layers=all_linear.
        if adapter.layers == "all_linear":
            return block_linear_names(model)
        return list(backbone_targets or lora_targets_of(model))

    def settings(self, adapter: AdapterConfig) -> dict[str, Any]:
        return {"r": adapter.r, "lora_alpha": adapter.alpha, "lora_dropout": adapter.dropout}

    def config_class(self, adapter: AdapterConfig) -> type[PeftConfig]:
        return LoraConfig


@dataclass(frozen=True)
class IA3Adapter(PeftAdapter):
    """(IA)^3: learned vectors that rescale keys, values and the feed-forward output; PEFT
    picks the modules for the model's type (``feedforward_modules`` in options otherwise)."""

    def config_class(self, adapter: AdapterConfig) -> type[PeftConfig]:
        return IA3Config


@dataclass(frozen=True)
class AnyPeft(PeftAdapter):
    """Any tuner PEFT injects into a model, by ``adapter.peft_type`` (LOHA, LOKR, VERA, ...)."""

    def config_class(self, adapter: AdapterConfig) -> type[PeftConfig]:
        injectable = injectable_peft_types()
        name = adapter.peft_type.upper()
        if name not in injectable:
            raise ConfigError(
                f"adapter.kind=peft needs adapter.peft_type, a PEFT tuner that adds weights "
                f"inside the model; got {adapter.peft_type!r}, expected one of "
                f"{', '.join(injectable)}. (PEFT's prompt-learning methods add virtual "
                "tokens instead; lowres's own soft prompts are prompt=input and prompt=deep.)"
            )
        return PEFT_TYPE_TO_CONFIG_MAPPING[name]


def injectable_peft_types() -> list[str]:
    """PEFT tuners that inject weights into the model's own modules (not virtual tokens)."""
    return sorted(
        str(peft_type.value)
        for peft_type, config_class in PEFT_TYPE_TO_CONFIG_MAPPING.items()
        if peft_type in PEFT_TYPE_TO_PREFIX_MAPPING
        and not issubclass(config_class, PromptLearningConfig)
        and peft_type != PeftType.ADAPTION_PROMPT
    )


NO_ADAPTER = NoAdapter()
LORA = Lora()
IA3 = IA3Adapter()
ANY_PEFT = AnyPeft()


def adapter_prefix(config: PeftConfig) -> str:
    """The name part PEFT gives the parameters of this tuner (``lora_``, ``ia3_``, ...)."""
    return PEFT_TYPE_TO_PREFIX_MAPPING[config.peft_type]


def check_targets(model, target_modules: Sequence[str] | None) -> None:
    """Refuse target modules the backbone does not have, naming some it has."""
    if not target_modules or isinstance(target_modules, str):
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"adapter.target_modules names {missing}, which this backbone does not have; "
            f"its linear layers include e.g. {sorted(n for n in names if n)[:12]}."
        )
