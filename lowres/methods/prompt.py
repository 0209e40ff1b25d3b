"""Soft prompts with optional injection at depth, for any Hugging Face model with a task head.

The prompt is ``m`` trainable vectors inserted into the input embeddings after the first
special token ([CLS] / <s>), so a classification head still reads [CLS] at position 0. For
extractive QA the start/end logits of the prompt positions are cut out again, so labels and
offsets keep referring to the original tokens and no label shifting is needed.

Deep injection writes fresh learnable vectors into the prompt positions of the hidden states
before each chosen layer, through forward pre-hooks on the layer modules. That works on any
layer stack (BERT, XLM-R, Llama) without the ``past_key_values`` API.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lowres.errors import ConfigError
from lowres.methods.freezing import find_layers


def resolve_layers(layers: Any, depth: int) -> list[int]:
    """Indices of the layers that get injected vectors: ``input`` -> none, ``all`` -> 1..depth-1.

    Layer 0 already sees the input prompt through the embeddings, so ``all`` starts at 1;
    an explicit list may name 0 to overwrite the embedding output there as well.
    """
    if layers == "input":
        return []
    if layers == "all":
        return list(range(1, depth))
    indices = sorted({int(i) for i in layers})
    bad = [i for i in indices if not 0 <= i < depth]
    if bad:
        raise ConfigError(
            f"prompt.layers={list(layers)} names layers {bad} outside the model; this backbone "
            f"has {depth} layers, so indices must be in 0..{depth - 1}."
        )
    return indices


def initial_prompt(
    embeddings: nn.Embedding,
    length: int,
    how: str,
    *,
    text_ids: Sequence[int] = (),
    special_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Starting values of the input prompt: random, sampled vocabulary rows, or a text's rows."""
    weight = embeddings.weight.detach().float()
    if how == "random":
        noise = torch.randn(length, weight.shape[1], generator=generator)
        return noise * weight.std()
    if how == "vocab":
        allowed = torch.ones(weight.shape[0], dtype=torch.bool)
        allowed[list(special_ids)] = False
        candidates = allowed.nonzero().squeeze(1)
        picks = candidates[torch.randint(len(candidates), (length,), generator=generator)]
        return weight[picks].clone()
    if how == "text":
        if not text_ids:
            raise ConfigError("prompt.init_text tokenizes to nothing; give it some words.")
        repeated = (list(text_ids) * (length // len(text_ids) + 1))[:length]
        return weight[torch.tensor(repeated)].clone()
    raise ValueError(f"prompt init {how!r}")  # lowres.schema.validate checked prompt.init


class PromptedModel(nn.Module):
    """Wraps a model with a task head; adds the soft prompt and computes the task loss.

    ``forward`` returns a dict: ``loss`` when labels are given, ``start_logits`` and
    ``end_logits`` (QA, over the original tokens) or ``logits`` (classification), and
    ``hidden_states`` when asked for (prompt positions included; see ``text_mask``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task_kind: str,
        layer_stack: nn.ModuleList,
        length: int = 0,
        inject_layers: Sequence[int] = (),
        insert_at: int = 1,
        init: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task_kind = task_kind
        self.length = length
        self.insert_at = insert_at
        self.inject_layers = list(inject_layers)
        hidden = model.get_input_embeddings().weight.shape[1]
        if length:
            start = init if init is not None else torch.zeros(length, hidden)
            self.prompt = nn.Parameter(start.to(torch.float32).clone())
        else:
            self.prompt = None
        if self.inject_layers and not length:
            raise ConfigError("prompt.layers injects at depth but prompt.length=0; set a length.")
        # Filled by init_deep_prompts(); until then injection would write zeros.
        self.deep_prompts = (
            nn.Parameter(torch.zeros(len(self.inject_layers), length, hidden))
            if self.inject_layers
            else None
        )
        self._injecting = False
        self._probing = False
        self._hooks = [
            layer_stack[index].register_forward_pre_hook(self._make_hook(slot), with_kwargs=True)
            for slot, index in enumerate(self.inject_layers)
        ]

    @property
    def config(self):
        return self.model.config

    def max_text_positions(self) -> int:
        """Tokens a sequence may have so that sequence + prompt fits the position table."""
        limit = getattr(self.model.config, "max_position_embeddings", None) or 10**9
        # XLM-R numbers positions from padding_idx + 1, which costs two table rows.
        if getattr(self.model.config, "model_type", "") in ("xlm-roberta", "roberta"):
            limit -= self.model.config.pad_token_id + 1
        return limit - self.length

    def fits(self, tokens: int) -> bool:
        """Whether a sequence of ``tokens`` plus the prompt fits the position table: the one
        place this is worked out (the builders check the configured lengths with it, the
        forward passes each batch)."""
        return tokens <= self.max_text_positions()

    def _make_hook(self, slot: int):
        def hook(module, args, kwargs):
            if not self._injecting:
                return None
            if args:
                hidden, rest = args[0], args[1:]
            else:
                hidden, rest = kwargs["hidden_states"], ()
            batch = hidden.shape[0]
            p, m = self.insert_at, self.length
            vectors = self.deep_prompts[slot].to(hidden.dtype).unsqueeze(0).expand(batch, -1, -1)
            hidden = torch.cat([hidden[:, :p], vectors, hidden[:, p + m :]], dim=1)
            if args:
                return (hidden, *rest), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook

    @torch.no_grad()
    def init_deep_prompts(self, probe_ids: torch.Tensor) -> None:
        """Start each injected layer's vectors at the hidden states the input prompt yields there.

        At step 0 deep injection then computes exactly what the input-only prompt computes,
        so training starts from a working function instead of random hidden states.
        """
        if self.deep_prompts is None:
            return
        captured: dict[int, torch.Tensor] = {}
        p, m = self.insert_at, self.length

        def capture(slot):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                captured[slot] = hidden[0, p : p + m].detach().float().clone()

            return hook

        layers = self._layer_modules()
        probes = [
            layers[index].register_forward_pre_hook(capture(slot), with_kwargs=True)
            for slot, index in enumerate(self.inject_layers)
        ]
        was_training = self.training
        self.eval()
        self._probing = True
        try:
            self.forward(input_ids=probe_ids, attention_mask=torch.ones_like(probe_ids))
        finally:
            self._probing = False
            for handle in probes:
                handle.remove()
            self.train(was_training)
        for slot, values in captured.items():
            self.deep_prompts[slot].copy_(values)

    def _layer_modules(self) -> nn.ModuleList:
        return find_layers(self.model)

    def text_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Attention mask over the prompted sequence with the prompt positions switched off."""
        if not self.length:
            return attention_mask
        p = self.insert_at
        zeros = attention_mask.new_zeros(attention_mask.shape[0], self.length)
        return torch.cat([attention_mask[:, :p], zeros, attention_mask[:, p:]], dim=1)

    def _prompted_inputs(self, input_ids, attention_mask, token_type_ids=None) -> dict[str, Any]:
        if not self.length:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            return inputs
        seq = input_ids.shape[1]
        if not self.fits(seq):
            raise ConfigError(
                f"A sequence of {seq} tokens plus a prompt of {self.length} does not fit the "
                f"backbone's {self.max_text_positions() + self.length} positions; lower "
                "task.max_length or prompt.length so that their sum fits."
            )
        embeds = self.model.get_input_embeddings()(input_ids)
        batch, p = input_ids.shape[0], self.insert_at
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        inputs: dict[str, Any] = {
            "inputs_embeds": torch.cat([embeds[:, :p], prompt, embeds[:, p:]], dim=1),
            "attention_mask": torch.cat(
                [
                    attention_mask[:, :p],
                    attention_mask.new_ones(batch, self.length),
                    attention_mask[:, p:],
                ],
                dim=1,
            ),
        }
        if token_type_ids is not None:
            inputs["token_type_ids"] = torch.cat(
                [
                    token_type_ids[:, :p],
                    token_type_ids.new_zeros(batch, self.length),
                    token_type_ids[:, p:],
                ],
                dim=1,
            )
        return inputs

    def _drop_prompt(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.length:
            return logits
        p = self.insert_at
        return torch.cat([logits[:, :p], logits[:, p + self.length :]], dim=1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> dict[str, Any]:
        inputs = self._prompted_inputs(input_ids, attention_mask, token_type_ids)
        self._injecting = self.deep_prompts is not None and not self._probing
        try:
            out = self.model(**inputs, output_hidden_states=output_hidden_states)
        finally:
            self._injecting = False
        result: dict[str, Any] = {}
        if output_hidden_states:
            result["hidden_states"] = out.hidden_states
        if self.task_kind == "extractive_qa":
            start = self._drop_prompt(out.start_logits)
            end = self._drop_prompt(out.end_logits)
            result["start_logits"], result["end_logits"] = start, end
            if start_positions is not None and end_positions is not None:
                # Positions past the window (answer cut off) are ignored, as in BERT's QA head.
                ignored = start.shape[1]
                s = start_positions.clamp(0, ignored)
                e = end_positions.clamp(0, ignored)
                # Padding is no answer position: left in the softmax, it would make the loss
                # depend on how much padding a batch happens to have.
                padding = attention_mask == 0
                lowest = torch.finfo(torch.float32).min
                result["loss"] = (
                    F.cross_entropy(
                        start.float().masked_fill(padding, lowest), s, ignore_index=ignored
                    )
                    + F.cross_entropy(
                        end.float().masked_fill(padding, lowest), e, ignore_index=ignored
                    )
                ) / 2
        else:
            result["logits"] = out.logits
            if labels is not None:
                result["loss"] = F.cross_entropy(out.logits.float(), labels)
        return result

    def param_groups(
        self, *, lr: float, weight_decay: float, prompt_lr: float | None = None
    ) -> list[dict[str, Any]]:
        """Optimizer groups of what trains (frozen weights get no optimizer state).

        Weight matrices decay; biases and norms do not; the soft prompts train at their own
        rate (``prompt_lr``, else ``lr``), since prompt vectors need far larger steps.
        """
        prompts = {id(p) for p in (self.prompt, self.deep_prompts) if p is not None}
        prompt, decay, no_decay = [], [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if id(param) in prompts:
                prompt.append(param)
            elif param.ndim < 2 or "norm" in name.lower():
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"params": decay, "weight_decay": weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            {"params": prompt, "weight_decay": 0.0, "lr": lr if prompt_lr is None else prompt_lr},
        ]
        return [g for g in groups if g["params"]]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the checkpoint format."""
        return {
            name: param.detach().cpu().contiguous()
            for name, param in self.named_parameters()
            if param.requires_grad
        }


def _accepts(module: nn.Module, argument: str) -> bool:
    return argument in inspect.signature(module.forward).parameters


class PromptedCausalLM(PromptedModel):
    """A decoder-only LM with the soft prompt before the text, right after BOS if there is one.

    Inputs may be padded on either side. Each row is laid out as ``[BOS] P_1..P_m [pads] text``:
    the leading all-padding columns of the batch are dropped, the row's BOS moves to column 0,
    and the prompt follows at fixed columns, so deep injection writes the same columns in
    every row. Padding is masked and position ids count real tokens only, so a padded row
    computes what it computes alone. The text keeps its order and stays right-aligned, which
    is what batched generation appends to and what ``logits_to_keep`` slices.

    ``forward`` returns ``logits`` for the last ``logits_to_keep`` columns (0: for every input
    column after the leading all-padding ones, in input order), the ``loss`` over the tokens
    whose ``labels`` are not -100 (next-token prediction; only those columns get logits), and
    ``hidden_states`` in the prompted layout (see ``text_mask``). Each text token's logits
    predict the next token; the first text token is predicted by the last prompt vector.
    """

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        kwargs.setdefault("task_kind", "causal_lm")
        super().__init__(model, **kwargs)
        self._cache_argument = "cache" if _accepts(model, "cache") else "past_key_values"
        self._slices_logits = _accepts(model, "logits_to_keep")

    def _layout(self, attention_mask: torch.Tensor) -> tuple[int, torch.Tensor]:
        """First column holding any real token, and per-row column order that puts BOS first."""
        real = attention_mask.bool()
        used = real.any(dim=0)
        start = int(used.int().argmax()) if bool(used.any()) else real.shape[1]
        real = real[:, start:]
        columns = torch.arange(real.shape[1], device=real.device).unsqueeze(0)
        lead = torch.zeros_like(real)
        if self.insert_at and real.shape[1]:
            first = real.int().argmax(dim=1, keepdim=True)
            lead = (columns >= first) & (columns < first + self.insert_at)
        order = torch.argsort((~lead).int(), dim=1, stable=True)
        return start, order

    def _arranged(self, values: torch.Tensor, start: int, order: torch.Tensor) -> torch.Tensor:
        values = values[:, start:]
        index = order if values.dim() == 2 else order.unsqueeze(-1).expand_as(values)
        return values.gather(1, index)

    def _insert(self, values: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
        p = self.insert_at
        return torch.cat([values[:, :p], block, values[:, p:]], dim=1)

    def text_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        start, order = self._layout(attention_mask)
        mask = self._arranged(attention_mask, start, order)
        return self._insert(mask, mask.new_zeros(mask.shape[0], self.length))

    def _prompted_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        start, order = self._layout(attention_mask)
        width = input_ids.shape[1] - start
        if not self.fits(width):
            raise ConfigError(
                f"A sequence of {width} tokens plus a prompt of {self.length} does not fit the "
                f"backbone's context window of {self.max_text_positions() + self.length} "
                "positions; lower task.max_length or prompt.length so that their sum fits."
            )
        embeds = self.model.get_input_embeddings()(input_ids[:, start:])
        embeds = self._arranged(embeds, 0, order)
        mask = self._arranged(attention_mask, start, order)
        batch = input_ids.shape[0]
        if self.length:
            prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
            embeds = self._insert(embeds, prompt)
            mask = self._insert(mask, mask.new_ones(batch, self.length))
        positions = (mask.long().cumsum(dim=1) - 1).masked_fill(mask == 0, 1)
        return start, order, embeds, mask, positions

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        logits_to_keep: int = 0,
        **_: Any,
    ) -> dict[str, Any]:
        start, order, embeds, mask, positions = self._prompted_embeddings(input_ids, attention_mask)
        first_label = 0
        if labels is not None:
            labels = labels[:, start:]
            labelled = (labels != -100).any(dim=0)
            if not bool(labelled.any()):
                raise ValueError("a training batch has no labelled token (all labels are -100)")
            # Only the labelled tail needs logits; on a 150k vocabulary they dominate memory.
            first_label = int(labelled.int().argmax())
            logits_to_keep = labels.shape[1] - first_label + 1
        extra = {}
        if logits_to_keep and self._slices_logits:
            extra["logits_to_keep"] = logits_to_keep
        # Stays set after the call: a gradient-checkpointing replay of a layer must inject too.
        self._injecting = self.deep_prompts is not None and not self._probing
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            **extra,
        )
        if logits_to_keep:
            logits = out.logits[:, -logits_to_keep:]
        else:  # every input column's own output, in input order, the prompt left out
            column = torch.argsort(order, dim=1)
            column = column + self.length * (column >= self.insert_at)
            index = column.unsqueeze(-1).expand(-1, -1, out.logits.shape[-1])
            logits = out.logits.gather(1, index)
        result: dict[str, Any] = {"logits": logits}
        if output_hidden_states:
            result["hidden_states"] = out.hidden_states
        if labels is not None:
            result["loss"] = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, first_label:].reshape(-1),
                ignore_index=-100,
            )
        return result

    @torch.no_grad()
    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        stop_ids: Sequence[int],
    ) -> torch.Tensor:
        """Greedy continuation with the KV cache; ``[batch, steps]``, stopped rows hold a stop id.

        The prompted prefix runs once (with deep injection); each later step feeds one token
        per row, its position one past the row's last, through the cache.
        """
        _, _, embeds, mask, positions = self._prompted_embeddings(input_ids, attention_mask)
        stops = torch.tensor(sorted(set(stop_ids)), device=input_ids.device)
        extra = {"logits_to_keep": 1} if self._slices_logits else {}
        self._injecting = self.deep_prompts is not None
        try:
            out = self.model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **extra,
            )
        finally:
            self._injecting = False
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        position = positions[:, -1:] + 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        steps = []
        for step in range(max_new_tokens):
            token = out.logits[:, -1].argmax(dim=-1)
            token = torch.where(done, stops[0], token)
            steps.append(token)
            done |= torch.isin(token, stops)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = self.model(
                input_ids=token.unsqueeze(1),
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                **{self._cache_argument: cache},
            )
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = out.past_key_values
            position = position + 1
        if not steps:
            return input_ids.new_zeros(input_ids.shape[0], 0)
        return torch.stack(steps, dim=1)
