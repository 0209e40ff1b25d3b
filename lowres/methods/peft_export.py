"""A PEFT adapter run's trained state as a PEFT folder (``PeftModel.from_pretrained`` loads it).

lowres injects the adapter (LoRA, DoRA, IA3, any tuner of :mod:`lowres.methods.adapters`) into
the backbone in place (:func:`lowres.methods.build.inject_adapter`) and saves only what trained
in its own format. PEFT users expect a ``save_pretrained`` folder:
``adapter_config.json`` + ``adapter_model.safetensors``, with the trained task head saved as
one of the config's ``modules_to_save``. The folder is made by PEFT itself: a pristine copy
of the backbone is wrapped with ``get_peft_model`` under the same adapter settings, the
trained values are copied in, and ``save_pretrained`` writes it, so the format is whatever
the installed PEFT reads back.

Only the adapter plus the task head has a PEFT equivalent. A soft prompt after [CLS] (PEFT's
prompt tuning puts its virtual tokens before the whole input and has no [CLS]-relative
position, nor lowres's cutting of the prompt's span logits) and deep injection (hidden states
overwritten before chosen layers; PEFT's prefix tuning adds keys and values instead, a
different function) cannot be expressed, nor can backbone weights trained outside the adapter
(freeze=none, lower_k, bitfit). Such runs get no folder, and :func:`peft_blocker` says why.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from peft import TaskType, get_peft_model

from lowres.methods.adapters import adapter_prefix

PEFT_DIR = "peft"
# The PEFT model class PeftModel.from_pretrained picks for each task. Extractive QA stays the
# plain PeftModel, which hands every input to the model: PeftModelForQuestionAnswering (PEFT
# 0.21) drops token_type_ids before calling a LoRA model, so a BERT would read the context
# as segment A and predict other spans than the run did.
TASK_TYPES = {
    "extractive_qa": None,
    "classification": TaskType.SEQ_CLS,
}


def head_modules(model: torch.nn.Module) -> list[str]:
    """Top-level modules of the HF model outside its backbone that hold trained weights."""
    backbone = getattr(model, "base_model_prefix", "")
    heads = []
    for name, child in model.named_children():
        if name == backbone:
            continue
        if any(p.requires_grad for p in child.parameters()):
            heads.append(name)
    return heads


def peft_blocker(prompted) -> str | None:
    """Why the trained state of ``prompted`` (a PromptedModel) has no PEFT form; None if it has."""
    if prompted.length:
        return (
            f"it trains a soft prompt of {prompted.length} vectors after the first token"
            + (" with deep injection" if prompted.deep_prompts is not None else "")
            + ", which PEFT cannot express; train with prompt=none (or +method=lora) for a "
            "PEFT adapter"
        )
    model = prompted.model
    backbone = getattr(model, "base_model_prefix", "")
    config = getattr(model, "peft_config", {}).get("default")
    part = adapter_prefix(config) if config is not None else None
    tuner = "LoRA" if config is None or config.peft_type == "LORA" else config.peft_type.value
    others = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and not (part and part in name) and name.split(".", 1)[0] == backbone
    ]
    if others:
        return (
            f"backbone weights outside {tuner} train too ({len(others)} tensors, e.g. "
            f"{others[0]}), which a PEFT adapter does not hold; use freeze=backbone with an "
            "adapter (adapter=lora)"
        )
    return None


def export_peft(
    prompted, base: torch.nn.Module, directory: str | Path, *, task_kind: str, family: str
) -> Path:
    """Write ``prompted``'s LoRA matrices and trained head as a PEFT folder over ``base``.

    ``base`` is a pristine copy of the backbone with the same head class (it becomes the PEFT
    model, so it is used up). The LoRA settings are the ones injected into ``prompted``
    (rank, alpha, dropout, the resolved target modules). Every trained tensor must land on a
    PEFT parameter of the same shape; anything else is a bug, not a user error.
    """
    model = prompted.model
    heads = head_modules(model)
    config = dataclasses.replace(
        model.peft_config["default"],
        modules_to_save=heads or None,
        task_type=TaskType.CAUSAL_LM if family == "decoder" else TASK_TYPES[task_kind],
    )
    peft_model = get_peft_model(base, config)
    own = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, value in model.named_parameters():
            if not value.requires_grad:
                continue
            head = name.split(".", 1)[0]
            if head in heads:
                rest = name.split(".", 1)[1]
                target = f"base_model.model.{head}.modules_to_save.default.{rest}"
            else:
                target = f"base_model.model.{name}"
            if target not in own or own[target].shape != value.shape:
                raise RuntimeError(f"trained tensor {name} has no PEFT counterpart {target}")
            own[target].copy_(value.detach().to(own[target].dtype))
    directory = Path(directory)
    peft_model.save_pretrained(str(directory))
    return directory
