"""Which parameters of a Hugging Face task model are trained.

Strategies only touch the HF model. Soft-prompt parameters live in the wrapper around it, which
decides about them itself: ``backbone`` and ``head_only`` give the same trainable set here and
differ only in the wrapper (``backbone`` trains the prompt, ``head_only`` freezes it).

Tied weights: some decoders share ``lm_head.weight`` with the input embeddings. Such a tensor
is not counted as head (training it would also train the embeddings), and under every strategy
a shared tensor is trainable only if each of its names would be, so ``backbone`` or ``lower_k``
never unfreeze embeddings through the back door. ``apply_freezing`` logs a warning when that
keeps a tied head frozen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import nn

from lowres.errors import ConfigError
from lowres.registry import FREEZING_STRATEGIES

logger = logging.getLogger(__name__)

# Where known architectures keep their layer stack, relative to ``model.base_model``.
_LAYER_PATHS = ("encoder.layer", "layers", "h", "transformer.layer", "decoder.layers")


def _base(model: nn.Module) -> nn.Module:
    # A plain module without a task head is its own backbone.
    return getattr(model, "base_model", model)


def _get_path(module: nn.Module, path: str) -> object:
    node: object = module
    for attr in path.split("."):
        node = getattr(node, attr, None)
    return node


def find_layers(model: nn.Module) -> nn.ModuleList:
    """Return the transformer layer stack of ``model`` (BERT/XLM-R, Llama/Qwen, GPT-2, ...)."""
    base = _base(model)
    for path in _LAYER_PATHS:
        found = _get_path(base, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    # Unknown architecture: the longest ModuleList of identical blocks is the layer stack.
    candidates = [
        m
        for m in base.modules()
        if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1
    ]
    if not candidates:
        raise ConfigError(
            f"could not find the transformer layers of {type(model).__name__} (looked for "
            "base_model.encoder.layer, base_model.layers and any list of identical blocks), "
            "which freeze.strategy lower_k and deep prompts (prompt.layers other than input) "
            "need; use a BERT-, XLM-R-, Llama- or Qwen-style backbone, or set freeze.strategy "
            "to none, backbone, bitfit or head_only and prompt.layers to input."
        )
    return max(candidates, key=len)


def _names_by_param(model: nn.Module) -> dict[nn.Parameter, list[str]]:
    names: dict[nn.Parameter, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(p, []).append(name)
    return names


def tied_head_parameters(model: nn.Module) -> dict[str, str]:
    """Map head parameter names that share their tensor with the backbone to a backbone name."""
    if _base(model) is model:
        return {}
    base = set(_base(model).parameters())
    prefix = f"{model.base_model_prefix}."
    tied = {}
    for p, names in _names_by_param(model).items():
        if p not in base:
            continue
        inside = [n for n in names if n.startswith(prefix)]
        tied.update({n: inside[0] for n in names if not n.startswith(prefix)})
    return tied


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the task-head parameters: those outside ``model.base_model``.

    A head tensor tied to the backbone (``lm_head.weight`` sharing the input embeddings) is
    left out; see ``tied_head_parameters``.
    """
    base = set(_base(model).parameters())
    return {name for p, names in _names_by_param(model).items() if p not in base for name in names}


def _lower_k_frozen(model: nn.Module, k: int) -> set[str]:
    """Names of the embeddings and the lowest ``k`` layers (``k < 0``: all but the top -k)."""
    layers = find_layers(model)
    depth = len(layers)
    if isinstance(k, bool) or not isinstance(k, int) or not -depth <= k <= depth:
        raise ConfigError(
            f"freeze.k is {k!r}, but with freeze.strategy lower_k it must be an integer in "
            f"0..{depth} (this model has {depth} layers; 0 freezes only the embeddings, {depth} "
            f"every layer), or in -{depth}..-1 to train only the top -k layers; set freeze.k "
            f"to a value in -{depth}..{depth}."
        )
    k = depth + k if k < 0 else k  # -n: the top n layers train, whatever the depth
    names = _names_by_param(model)
    frozen = {n for layer in layers[:k] for p in layer.parameters() for n in names[p]}
    # Base-model parameters registered before the layer stack are the embeddings (word,
    # position, token type and their norm); those after it are final norms or poolers.
    in_layers = set(layers.parameters())
    for p in _base(model).parameters():
        if p in in_layers:
            break
        frozen.update(names[p])
    get_embeddings = getattr(model, "get_input_embeddings", None)
    if get_embeddings is not None:
        frozen.update(n for p in get_embeddings().parameters() for n in names[p])
    return frozen


def freeze_none(model: nn.Module, k: int) -> Callable[[str], bool]:
    return lambda name: True


def freeze_head_only(model: nn.Module, k: int) -> Callable[[str], bool]:
    head = head_parameter_names(model)
    return lambda name: name in head


def freeze_lower_k(model: nn.Module, k: int) -> Callable[[str], bool]:
    frozen = _lower_k_frozen(model, k)
    return lambda name: name not in frozen


def freeze_bitfit(model: nn.Module, k: int) -> Callable[[str], bool]:
    head = head_parameter_names(model)
    return lambda name: name in head or name.endswith(".bias") or name == "bias"


# The strategies (lowres.registry.FREEZING_STRATEGIES) return a predicate telling, by parameter
# name, what is trained; ``k`` is only read by ``lower_k``. ``backbone`` trains what
# ``head_only`` trains here (see the module docstring).
freeze_backbone = freeze_head_only


def apply_freezing(
    model: nn.Module, strategy: str, k: int = 0, never_train: frozenset[str] = frozenset()
) -> None:
    """Set ``requires_grad`` on every parameter of ``model`` according to ``strategy``.

    ``never_train`` names parameters that stay frozen whatever the strategy says.
    """
    trainable = FREEZING_STRATEGIES.load(strategy)(model, k)
    for p, names in _names_by_param(model).items():
        p.requires_grad_(all(trainable(n) and n not in never_train for n in names))
    if strategy != "none":
        for head_name, base_name in tied_head_parameters(model).items():
            if head_name in never_train:
                continue
            logger.warning(
                "%s is tied to %s; it stays frozen under freeze.strategy %s because training "
                "it would also train the input embeddings",
                head_name,
                base_name,
                strategy,
            )


def untie_output_embeddings(model: nn.Module) -> bool:
    """Give a causal LM's head its own copy of a weight it shares with the input embeddings.

    Returns whether it was tied. Afterwards training the head leaves the embeddings alone.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or embeddings is None or head.weight is not embeddings.weight:
        return False
    head.weight = nn.Parameter(head.weight.detach().clone())
    # Keeps save/load and any later tie_weights() call from sharing the tensor again.
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    return True


def apply_decoder_freezing(model: nn.Module, strategy: str, k: int = 0) -> None:
    """Freezing for a causal LM, whose only head is its pretrained LM head.

    A decoder gets no new task head: QA answers are generated and PAWS-X labels are words,
    both scored through the LM head. So ``backbone`` freezes the whole LM (the soft prompt and
    adapters train), ``bitfit`` trains biases only (Qwen2 has q/k/v biases, Llama none), and
    ``head_only`` trains the LM head alone, a linear probe over the frozen last hidden states
    into the vocabulary; a head tied to the input embeddings is untied first so that the
    embeddings stay put. ``none`` and ``lower_k`` are the same as for encoders.
    """
    if strategy == "head_only":
        untie_output_embeddings(model)
    keep_frozen = (
        frozenset(head_parameter_names(model) | set(tied_head_parameters(model)))
        if strategy in ("backbone", "bitfit")
        else frozenset()
    )
    apply_freezing(model, strategy, k=k, never_train=keep_frozen)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, total)`` element counts, counting shared tensors once."""
    params = list(module.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, sum(p.numel() for p in params)
