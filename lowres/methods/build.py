"""Turn a backbone with a task head into the model a method trains.

Order matters: adapters are injected first (they add parameters), freezing then decides
what of the backbone trains, adapter and prompt parameters are switched back on, and the
deep prompts are initialised last from the finished model.
"""

from __future__ import annotations

import torch
from peft import inject_adapter_in_model
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

from lowres.errors import ConfigError
from lowres.methods.adapters import adapter_prefix, check_targets
from lowres.methods.freezing import (
    apply_decoder_freezing,
    apply_freezing,
    count_parameters,
    find_layers,
)
from lowres.methods.prompt import PromptedCausalLM, PromptedModel, initial_prompt, resolve_layers
from lowres.registry import ADAPTERS
from lowres.schema import AdapterConfig, FreezeConfig, PromptConfig

# Attention projections LoRA adapts by default, by module name, for architectures PEFT's own
# table (keyed by model_type) does not list: DistilBERT, GPT-NeoX, Falcon, MPT ...
_LORA_NAME_PAIRS = (
    ("query", "value"),
    ("q_proj", "v_proj"),
    ("q_lin", "v_lin"),
    ("c_attn",),
    ("query_key_value",),
    ("qkv_proj",),
    ("Wqkv",),
)


def lora_targets_of(model) -> list[str]:
    """LoRA's default target modules for ``model``: PEFT's choice for its model_type, else
    the first attention-projection names it has; refused, with its linear layers, if none."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if known and set(known) <= names:
        return list(known)
    for pair in _LORA_NAME_PAIRS:
        if set(pair) <= names:
            return list(pair)
    linear = sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )
    raise ConfigError(
        f"No default LoRA target modules for this {model_type or type(model).__name__} model: "
        f"PEFT has none for its type and it has no query/value or q_proj/v_proj layers. Name "
        f"the layers to adapt with adapter.target_modules=[...]; its linear layers are "
        f"{', '.join(linear[:16])}."
    )


def block_linear_names(model) -> list[str]:
    """The names of the linear layers inside one transformer block of ``model``, in order
    (BERT: query, key, value, dense; Llama: q_proj ... down_proj): LoRA on all of them.

    PEFT matches these by name, so a layer of the same name outside the blocks (BERT's
    pooler ``dense`` in a classification model) is adapted too.
    """
    block = find_layers(model)[0]
    names = [
        n.rsplit(".", 1)[-1] for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)
    ]
    return list(dict.fromkeys(names))


def inject_adapter(model, adapter: AdapterConfig) -> str | None:
    """Add ``adapter``'s PEFT weights in place, without wrapping the model; returns the name
    part of its parameters (``lora_``), None without an adapter."""
    config = ADAPTERS.load(adapter.kind).peft_config(adapter)
    if config is None:
        return None
    check_targets(model, config.target_modules)
    inject_adapter_in_model(config, model)
    return adapter_prefix(config)


def build_method(
    model,
    tokenizer,
    *,
    task_kind: str,
    family: str,
    freeze: FreezeConfig,
    prompt: PromptConfig,
    adapter: AdapterConfig,
    seed: int,
) -> PromptedModel:
    """The model a method trains: one config object per part, as PEFT takes its configs.

    An empty ``adapter.target_modules`` leaves the choice to PEFT; the builder fills in the
    backbone's default where the adapter entry has one (LoRA).
    """
    adapter_part = inject_adapter(model, adapter)
    if family == "decoder":
        apply_decoder_freezing(model, freeze.strategy, k=freeze.k)
    else:
        apply_freezing(model, freeze.strategy, k=freeze.k)
    if adapter_part:
        for name, param in model.named_parameters():
            if adapter_part in name:
                param.requires_grad_(True)

    set_backbone_dropout(model, freeze.dropout)
    layers = find_layers(model)
    inject = resolve_layers(prompt.layers, len(layers)) if prompt.length else []
    insert_at = _insert_position(tokenizer, family)
    init = None
    if prompt.length:
        generator = torch.Generator().manual_seed(seed)
        text_ids = (
            tokenizer(prompt.init_text, add_special_tokens=False)["input_ids"]
            if prompt.init == "text"
            else []
        )
        init = initial_prompt(
            model.get_input_embeddings(),
            prompt.length,
            prompt.init,
            text_ids=text_ids,
            special_ids=tokenizer.all_special_ids,
            generator=generator,
        )
    wrapper = PromptedCausalLM if family == "decoder" else PromptedModel
    wrapped = wrapper(
        model,
        task_kind=task_kind,
        layer_stack=layers,
        length=prompt.length,
        inject_layers=inject,
        insert_at=insert_at,
        init=init,
    )
    if inject:
        # A tokenizer without BOS (Qwen) encodes "" as no tokens: the probe is the prompt alone.
        probe = torch.tensor([tokenizer("")["input_ids"]], dtype=torch.long)
        wrapped.init_deep_prompts(probe)
    # head_only is a linear probe: the prompt stays at its initial values.
    for param in (wrapped.prompt, wrapped.deep_prompts):
        if param is not None:
            param.requires_grad_(freeze.strategy != "head_only")
    return wrapped


def set_backbone_dropout(model, keep: bool | None) -> bool:
    """Switch dropout inside the backbone off when asked, or by default when none of it trains.

    A fully frozen backbone is a fixed feature function: dropout there only adds noise to
    what the prompt and head see, and on the CPU it costs a fifth of a training step
    (attention-probability masks) and keeps fused attention kernels from running. Returns
    whether backbone dropout stays on.
    """
    base = model.base_model
    if keep is None:
        keep = any(p.requires_grad for p in base.parameters())
    if not keep:
        for module in base.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return keep


def _insert_position(tokenizer, family: str) -> int:
    """Encoders: after [CLS]/<s>. Decoders: after BOS when the tokenizer adds one."""
    ids = tokenizer("")["input_ids"]
    if family == "encoder":
        return 1
    return 1 if ids and ids[0] == tokenizer.bos_token_id else 0


def parameter_report(model) -> dict[str, int]:
    trainable, total = count_parameters(model)
    return {"trainable_parameters": trainable, "total_parameters": total}
