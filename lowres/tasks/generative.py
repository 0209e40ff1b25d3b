"""Tasks on decoder-only LLMs: text templates, answer-only labels, generation, label words.

A decoder reads one plain-text prompt rendered from a template and continues it:

* **Extractive QA** (XQuAD, MLQA): ``Context: {context}\\nQuestion: {question}\\nAnswer:``
  followed by `` answer`` and EOS. Training puts the loss on the answer tokens and EOS only;
  evaluation decodes greedily (KV cache on, at most ``task.max_answer_length`` new tokens,
  left-padded batches of ``backbone.generation_batch_size``), keeps the text up to the first
  stop token or line break, and scores it with the task's official metric. A context that
  does not fit ``task.max_length`` prompt tokens is cut at its end; a training question whose
  answer was cut away is skipped.
* **PAWS-X**: the two sentences and a yes/no question, followed by a label word in the
  record's language (``task.label_words``; label 0 = not a paraphrase, 1 = paraphrase).
  Training puts the loss on the label word's tokens; evaluation sums the log-probabilities of
  each label word's tokens after the prompt and predicts the larger.

:class:`GenerativeTask` wraps a task object and keeps its data loading, cross-lingual splits,
k-shot samples and scoring; only features and predictions change. With
``backbone.chat_template=true`` the rendered text becomes the user turn of the tokenizer's chat
template (instruction-tuned models); by default prompts are plain text.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lowres.errors import ConfigError, LowresError
from lowres.tasks.base import Task

DEFAULT_TEMPLATES = {
    "extractive_qa": "Context: {context}\nQuestion: {question}\nAnswer:",
    "classification": (
        "Sentence 1: {sentence1}\nSentence 2: {sentence2}\n"
        "Question: Do both sentences mean the same thing?\nAnswer:"
    ),
}
TEMPLATE_FIELDS = {
    "extractive_qa": ("context", "question"),
    "classification": ("sentence1", "sentence2"),
}
# Fields cut when a prompt is too long, in this order of preference (the longest first).
CUTTABLE = {"extractive_qa": ("context",), "classification": ("sentence1", "sentence2")}
# [word for label 0 (not a paraphrase), word for label 1 (paraphrase)] per PAWS-X language.
DEFAULT_LABEL_WORDS = {
    "en": ["No", "Yes"],
    "de": ["Nein", "Ja"],
    "es": ["No", "Sí"],
    "fr": ["Non", "Oui"],
    "ja": ["いいえ", "はい"],
    "ko": ["아니요", "네"],
    "zh": ["否", "是"],
}


def check_template(template: str, kind: str) -> str:
    """The template to use for ``kind`` (the default when empty); its fields must be exact."""
    template = template or DEFAULT_TEMPLATES[kind]
    expected = set(TEMPLATE_FIELDS[kind])
    try:
        found = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ConfigError(
            f"task.template={template!r} is not a valid template ({err}); write fields as "
            "{name} and literal braces as {{ and }}."
        ) from err
    if found != expected:
        raise ConfigError(
            f"task.template={template!r} has the fields {sorted(found)}, but a {kind} task "
            f"fills exactly {sorted(expected)}; use those placeholders, e.g. the default "
            f"{DEFAULT_TEMPLATES[kind]!r}."
        )
    return template


def check_label_words(given: Mapping[str, Sequence[str]] | None, num_labels: int) -> dict:
    """The default label words updated with ``given``; each language needs distinct words."""
    words = {lang: list(ws) for lang, ws in DEFAULT_LABEL_WORDS.items()}
    words.update({lang: list(ws) for lang, ws in (given or {}).items()})
    for lang, ws in words.items():
        clean = [str(w).strip() for w in ws]
        if len(clean) != num_labels or not all(clean) or len(set(clean)) != len(clean):
            raise ConfigError(
                f"task.label_words.{lang}={list(ws)} is not valid; expected {num_labels} distinct "
                f"non-empty words, the one for label 0 (not a paraphrase) first, e.g. "
                f"task.label_words.{lang}=[No,Yes]."
            )
        words[lang] = clean
    return words


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, fill: int | None = None):
    """``(ids, attention_mask)`` as tensors, each row right-aligned; ``fill`` pads ids instead."""
    width = max((len(r) for r in rows), default=0)
    value = pad_id if fill is None else fill
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def stop_ids(tokenizer, model) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS and the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id}
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids.update(extra if isinstance(extra, list | tuple) else [extra])
    ids.discard(None)
    if not ids:
        raise LowresError(
            "The decoder's tokenizer has no EOS token, so generated answers cannot end; use a "
            "tokenizer with an eos_token."
        )
    return sorted(ids)


class GenerativeTask:
    """A task read by a decoder: the wrapped task's data and metric, generative model side.

    The data, the cross-lingual protocol and the scores are the wrapped task's (``task``),
    forwarded one by one below; features and predictions are the decoder's own.
    """

    def __init__(
        self,
        task: Task,
        *,
        template: str = "",
        label_words: Mapping[str, Sequence[str]] | None = None,
        chat_template: bool = False,
        max_length: int = 384,
        max_question_length: int = 64,
        max_answer_length: int = 30,
        batch_size: int = 16,
    ) -> None:
        if task.kind not in TEMPLATE_FIELDS:
            raise ConfigError(f"task.kind={task.kind!r} has no decoder formulation.")
        self.task = task
        self.template = check_template(template, task.kind)
        num_labels = int(task.params.get("num_labels", 2))
        self.label_words = (
            check_label_words(label_words, num_labels) if task.kind == "classification" else {}
        )
        self.chat_template = chat_template
        self.max_length = max_length
        self.max_question_length = max_question_length
        self.max_answer_length = max_answer_length
        self.batch_size = batch_size
        self.skipped_long = 0
        # Label words are tokenized once per (language, tokenizer), not once per record.
        self._word_ids: dict[tuple[str, int], list[list[int]]] = {}

    # -- the wrapped task's data, protocol and metric, unchanged -----------------------------
    @property
    def name(self) -> str:
        return self.task.name

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def main_score(self) -> str:
        return self.task.main_score

    @property
    def settings(self):
        return self.task.settings

    @property
    def params(self) -> dict[str, Any]:
        """The task's parameters plus what shapes decoder features (feature-cache keys)."""
        return {
            **self.task.params,
            "decoder": {"template": self.template, "chat_template": self.chat_template},
        }

    def split(self, *args: Any, **kwargs: Any):
        return self.task.split(*args, **kwargs)

    def source_pool(self) -> list[dict]:
        return self.task.source_pool()

    def language_records(self, lang: str) -> list[dict]:
        return self.task.language_records(lang)

    def target_pool(self, lang: str) -> list[dict]:
        return self.task.target_pool(lang)

    def evaluation_records(self, lang: str) -> list[dict]:
        return self.task.evaluation_records(lang)

    def evaluation_sets(self) -> dict[str, list[dict]]:
        return self.task.evaluation_sets()

    def shot_order(self, records: Sequence[dict], lang: str) -> list[dict]:
        return self.task.shot_order(records, lang)

    def text_pair(self, record: dict) -> tuple[str, str]:
        return self.task.text_pair(record)

    def score(self, predictions: dict[str, Any], records: Sequence[dict], lang: str) -> dict:
        return self.task.score(predictions, records, lang)

    def data_record(self) -> dict[str, Any]:
        return self.task.data_record()

    def extra_metrics(self, per_language: dict[str, dict]) -> dict[str, Any]:
        return self.task.extra_metrics(per_language)

    # -- prompts -------------------------------------------------------------------------
    def fields(self, record: dict) -> dict[str, str]:
        if self.kind == "extractive_qa":
            return {"context": record["context"], "question": record["question"].strip()}
        return {"sentence1": record["sentence1"], "sentence2": record["sentence2"]}

    def render(self, fields: Mapping[str, str], tokenizer=None) -> str:
        text = self.template.format(**fields)
        if self.chat_template:
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise ConfigError(
                    "backbone.chat_template=true, but this backbone's tokenizer has no chat "
                    "template; set backbone.chat_template=false to use plain-text prompts."
                )
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def encode(self, text: str, tokenizer) -> list[int]:
        # A chat template writes BOS itself; plain text gets the tokenizer's specials (BOS).
        return tokenizer(text, add_special_tokens=not self.chat_template)["input_ids"]

    def prompt(self, record: dict, tokenizer) -> tuple[list[int], dict[str, str]]:
        """Token ids of the rendered prompt, cut to ``max_length``; and the fields it used.

        The longest cuttable field (the context; for PAWS-X a sentence) loses tokens at its end
        until the prompt fits.
        """
        fields = self.fields(record)
        if self.kind == "extractive_qa":
            fields["question"] = _cut_tokens(
                fields["question"], tokenizer, self.max_question_length
            )
        for _ in range(20):
            ids = self.encode(self.render(fields, tokenizer), tokenizer)
            over = len(ids) - self.max_length
            if over <= 0:
                return ids, fields
            sizes = {
                f: len(tokenizer(fields[f], add_special_tokens=False)["input_ids"])
                for f in CUTTABLE[self.kind]
            }
            longest = max(sizes, key=sizes.get)
            if sizes[longest] == 0:
                break
            fields[longest] = _cut_tokens(fields[longest], tokenizer, max(sizes[longest] - over, 0))
        raise ConfigError(
            f"task.max_length={self.max_length} tokens cannot hold the {self.name} prompt "
            f"template with its fixed parts (record {record['id']}); raise task.max_length "
            "(decoders: e.g. task.max_length=1024) or shorten task.template."
        )

    def target(self, record: dict, tokenizer) -> list[int]:
        """What follows the prompt in training: the answer and EOS, or the label word."""
        if self.kind == "extractive_qa":
            text = record["answers"]["text"][0].strip()
            return tokenizer(" " + text, add_special_tokens=False)["input_ids"] + [
                tokenizer.eos_token_id
            ]
        return self.word_ids(record["language"], tokenizer)[int(record["label"])]

    def word_ids(self, lang: str, tokenizer) -> list[list[int]]:
        """Token ids of each label word of ``lang``, as it follows the prompt (after a space)."""
        key = (lang, id(tokenizer))
        if key not in self._word_ids:
            self._word_ids[key] = self._tokenize_words(lang, tokenizer)
        return self._word_ids[key]

    def _tokenize_words(self, lang: str, tokenizer) -> list[list[int]]:
        if lang not in self.label_words:
            raise ConfigError(
                f"task.label_words has no words for language {lang!r} (it has "
                f"{', '.join(sorted(self.label_words))}); add them, e.g. "
                f"task.label_words.{lang}=[No,Yes]."
            )
        words = self.label_words[lang]
        ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in words]
        for word, word_ids in zip(words, ids, strict=True):
            if not word_ids:
                raise ConfigError(
                    f"The label word {word!r} of task.label_words.{lang} tokenizes to nothing "
                    "with this backbone's tokenizer, so it cannot be scored; choose a word the "
                    f"tokenizer knows, e.g. task.label_words.{lang}=[No,Yes]."
                )
        if len({tuple(i) for i in ids}) != len(ids):
            raise ConfigError(
                f"The label words {words} of task.label_words.{lang} tokenize to the same "
                "tokens, so they cannot be told apart; choose distinct words."
            )
        return ids

    # -- training --------------------------------------------------------------------------
    def train_features(self, records: Sequence[dict], tokenizer) -> dict[str, list]:
        """Prompt + target rows; ``labels`` are -100 except on the target tokens.

        Unpadded with ``task.padding=longest``; left-padded to the longest row otherwise.
        """
        rows, labels = [], []
        self.skipped_long = 0
        for record in records:
            prompt, fields = self.prompt(record, tokenizer)
            if self.kind == "extractive_qa" and not _answer_kept(record, fields["context"]):
                self.skipped_long += 1
                continue
            target = self.target(record, tokenizer)
            rows.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        if not rows:
            raise ConfigError(
                f"Every {self.name} training question lost its answer when its context was cut "
                f"to task.max_length={self.max_length} prompt tokens; raise task.max_length."
            )
        if self.task.params.get("padding", "longest") == "longest":
            # The collator pads each batch on the left to its own longest row.
            return {
                "input_ids": rows,
                "attention_mask": [[1] * len(row) for row in rows],
                "labels": labels,
            }
        ids, mask = left_pad(rows, tokenizer.pad_token_id)
        label_ids, _ = left_pad(labels, tokenizer.pad_token_id, fill=-100)
        return {
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "labels": label_ids.tolist(),
        }

    def predict(self, trainer, records: Sequence[dict], tokenizer, cache=None) -> dict[str, Any]:
        """``{record id: answer text}`` (QA) or ``{record id: label}`` (PAWS-X), by generation."""
        model = trainer.model
        device = trainer.args.device
        model.to(device)
        was_training = model.training
        model.eval()
        autocast = getattr(trainer, "autocast_smart_context_manager", contextlib.nullcontext)
        try:
            with autocast(), torch.no_grad():
                if self.kind == "extractive_qa":
                    return self._answers(model, records, tokenizer, device)
                return self._labels(model, records, tokenizer, device)
        finally:
            model.train(was_training)

    def _batches(self, prompts: Sequence[list[int]]):
        """Indices in batches of similar length (less padding), longest first."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _answers(self, model, records, tokenizer, device) -> dict[str, str]:
        prompts = [self.prompt(r, tokenizer)[0] for r in records]
        stops = stop_ids(tokenizer, model.model)
        answers: dict[int, str] = {}
        for batch in self._batches(prompts):
            ids, mask = left_pad([prompts[i] for i in batch], tokenizer.pad_token_id)
            generated = model.generate_greedy(
                ids.to(device),
                mask.to(device),
                max_new_tokens=self.max_answer_length,
                stop_ids=stops,
            )
            for i, tokens in zip(batch, generated.tolist(), strict=True):
                answers[i] = decode_answer(tokens, stops, tokenizer)
        return {r["id"]: answers[i] for i, r in enumerate(records)}

    def _labels(self, model, records, tokenizer, device) -> dict[str, int]:
        scores = self.label_scores(model, records, tokenizer, device)
        return {r["id"]: int(np.argmax(s)) for r, s in zip(records, scores, strict=True)}

    @torch.no_grad()
    def label_scores(self, model, records, tokenizer, device) -> np.ndarray:
        """``[records, labels]`` log-likelihoods of each label word after each prompt."""
        prompts = [self.prompt(r, tokenizer)[0] for r in records]
        words = [self.word_ids(r["language"], tokenizer) for r in records]
        scores = np.zeros((len(records), len(words[0]) if words else 0))
        for batch in self._batches(prompts):
            rows = [prompts[i] + w for i in batch for w in words[i]]
            lengths = torch.tensor([len(w) for i in batch for w in words[i]])
            ids, mask = left_pad(rows, tokenizer.pad_token_id)
            keep = int(lengths.max()) + 1
            logits = model(ids.to(device), mask.to(device), logits_to_keep=keep)["logits"]
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).cpu()
            targets = ids[:, -(keep - 1) :]
            picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            columns = torch.arange(keep - 1).unsqueeze(0)
            in_word = columns >= (keep - 1 - lengths).unsqueeze(1)
            totals = (picked * in_word).sum(dim=1).view(len(batch), -1)
            scores[batch] = totals.numpy()
        return scores


def decode_answer(tokens: Sequence[int], stops: Sequence[int], tokenizer) -> str:
    """Generated tokens up to the first stop token, as text up to its first line break."""
    cut = next((n for n, t in enumerate(tokens) if t in stops), len(tokens))
    text = tokenizer.decode(tokens[:cut], skip_special_tokens=True)
    return text.strip().split("\n", 1)[0].strip()


def _cut_tokens(text: str, tokenizer, limit: int) -> str:
    """``text`` cut after its first ``limit`` tokens, at a character boundary."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    if len(offsets) <= limit:
        return text
    # A character split over several byte-level tokens is kept whole, which can leave one
    # token too many: step back until the cut text fits.
    for keep in range(limit, 0, -1):
        cut = text[: offsets[keep - 1][1]]
        if len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= limit:
            return cut
    return ""


def _answer_kept(record: dict, context: str) -> bool:
    start = record["answers"]["answer_start"][0]
    return start + len(record["answers"]["text"][0]) <= len(context)


def generative_task(task: Task, task_cfg: Mapping[str, Any], backbone_cfg: Mapping[str, Any]):
    """Wrap ``task`` for a decoder backbone with the task and backbone settings."""
    return GenerativeTask(
        task,
        template=task_cfg.get("template", ""),
        label_words=task_cfg.get("label_words") or {},
        chat_template=bool(backbone_cfg.get("chat_template", False)),
        max_length=int(task_cfg["max_length"]),
        max_question_length=int(task_cfg.get("max_question_length", 64)),
        max_answer_length=int(task_cfg.get("max_answer_length", 30)),
        batch_size=int(backbone_cfg.get("generation_batch_size", 16)),
    )


def check_decoder_method(name: str, task_cfg: Any, model, tokenizer) -> None:
    """The prompt, the soft prompt and the longest answer must fit the decoder's window."""
    if task_cfg.kind == "extractive_qa":
        answer = task_cfg.max_answer_length + 1
    else:
        words = check_label_words(task_cfg.get("label_words"), task_cfg.num_labels)
        answer = max(
            len(tokenizer(" " + w, add_special_tokens=False)["input_ids"])
            for ws in words.values()
            for w in ws
        )
    window = model.max_text_positions() + model.length
    needed = task_cfg.max_length + model.length + answer
    if not model.fits(task_cfg.max_length + answer):
        raise ConfigError(
            f"task.max_length={task_cfg.max_length} prompt tokens plus prompt.length="
            f"{model.length} soft-prompt vectors plus up to {answer} answer tokens need "
            f"{needed} positions, more than the context window of backbone {name} "
            f"({window}); lower task.max_length to at most {window - model.length - answer}"
            " or shorten the prompt."
        )
