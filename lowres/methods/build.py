"""Turn a backbone with a task head into the model a method trains.

Order matters: adapters are injected first (they add parameters), freezing then decides
what of the backbone trains, adapter and prompt parameters are switched back on, and the
deep prompts are initialised last from the finished model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lowres.errors import ConfigError
from lowres.methods.freezing import (
    apply_decoder_freezing,
    apply_freezing,
    count_parameters,
    find_layers,
)
from lowres.methods.prompt import PromptedCausalLM, PromptedModel, initial_prompt, resolve_layers


def inject_lora(model, *, r: int, alpha: int, dropout: float, target_modules: Sequence[str]):
    """Add LoRA matrices to ``target_modules`` in place (PEFT), without wrapping the model."""
    from peft import LoraConfig, inject_adapter_in_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in target_modules if t not in names]
    if missing:
        raise ConfigError(
            f"adapter.target_modules names {missing}, which this backbone does not have; "
            f"its linear layers include e.g. {sorted(n for n in names if n)[:12]}."
        )
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)
    )
    return inject_adapter_in_model(config, model)


def build_method(
    model,
    tokenizer,
    *,
    task_kind: str,
    family: str,
    freeze: str,
    freeze_k: int,
    prompt_length: int,
    prompt_init: str,
    prompt_init_text: str,
    prompt_layers: Any,
    adapter: str,
    adapter_options: dict[str, Any],
    seed: int,
    backbone_dropout: bool | None = None,
) -> PromptedModel:
    if adapter == "lora":
        inject_lora(model, **adapter_options)
    if family == "decoder":
        apply_decoder_freezing(model, freeze, k=freeze_k)
    else:
        apply_freezing(model, freeze, k=freeze_k)
    if adapter == "lora":
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)

    set_backbone_dropout(model, backbone_dropout)
    layers = find_layers(model)
    inject = resolve_layers(prompt_layers, len(layers)) if prompt_length else []
    insert_at = _insert_position(tokenizer, family)
    init = None
    if prompt_length:
        generator = torch.Generator().manual_seed(seed)
        text_ids = (
            tokenizer(prompt_init_text, add_special_tokens=False)["input_ids"]
            if prompt_init == "text"
            else []
        )
        init = initial_prompt(
            model.get_input_embeddings(),
            prompt_length,
            prompt_init,
            text_ids=text_ids,
            special_ids=tokenizer.all_special_ids,
            generator=generator,
        )
    wrapper = PromptedCausalLM if family == "decoder" else PromptedModel
    wrapped = wrapper(
        model,
        task_kind=task_kind,
        layer_stack=layers,
        length=prompt_length,
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
            param.requires_grad_(freeze != "head_only")
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
