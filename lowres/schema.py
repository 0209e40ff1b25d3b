"""Structured config schemas.

Every YAML file under ``configs/`` is merged onto one of these dataclasses, so a misspelt
key or a value of the wrong type fails while Hydra composes the config, with Hydra's own
message. Range checks that a type cannot express live in :func:`validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from lowres.errors import ConfigError
from lowres.overrides import read_all as read_overrides
from lowres.registry import (
    ADAPTERS,
    ALIGNMENT_LOSSES,
    FREEZING_STRATEGIES,
    LOADERS,
    METRICS,
    POOLINGS,
    PSEUDO_KINDS,
    READERS,
)


@dataclass
class BackboneConfig:
    name: str = MISSING
    loader: str = MISSING  # tiny | packaged | converted | hub | local
    path: str = ""  # hub id, the package that ships the weights, or (local) a model folder
    architecture: str = ""  # tiny backbones: bert | xlmr | llama
    family: str = "encoder"  # encoder | decoder | auto (local: read from the folder's config)
    dtype: str = "float32"  # weights dtype when loaded: float32 | bfloat16 | float16
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])  # LoRA default
    chat_template: bool = False  # decoders: wrap prompts in the tokenizer's chat template
    gradient_checkpointing: bool = False  # decoders: recompute activations in backward
    generation_batch_size: int = 16  # decoders: prompts per generation/label-scoring batch
    trust_remote_code: bool = False  # local/hub: run the model's own Python code (auto_map)


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: str = MISSING  # extractive_qa | classification
    metric: str = MISSING  # squad | mlqa | accuracy
    languages: list[str] = field(default_factory=list)  # every language the task has
    max_length: int = 384
    stride: int = 128
    max_question_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    num_labels: int = 2
    padding: str = "longest"  # longest: each batch to its longest row | max_length: all to max
    question_languages: list[str] = field(default_factory=list)  # MLQA G-XLT; empty = XLT
    split: str = "dev"  # split of the official files evaluated (MLQA: dev | test)
    template: str = ""  # decoders: prompt text with {context} {question} / {sentence1} {sentence2}
    label_words: dict[str, list[str]] = field(default_factory=dict)  # decoders: lang -> [0, 1]
    # Tasks read by file pattern (lowres/tasks/files.py); "" = the built-in task of this name.
    reader: str = ""  # "" | squad_files (SQuAD v1.1 JSON) | pair_tsv (headed TSV)
    files: dict[str, str] = field(default_factory=dict)  # split -> path pattern with {lang}
    fallback_files: dict[str, str] = field(default_factory=dict)  # another layout, tried second
    language_names: dict[str, str] = field(default_factory=dict)  # code -> name, for {language}
    language_id_prefix: str = ""  # one file for all languages: a language's ids start with this
    unique_ids: bool = False  # squad_files: number repeated question ids (ID~2) instead of failing
    columns: dict[str, str] = field(default_factory=dict)  # pair_tsv: field -> header name
    label_names: list[str] = field(default_factory=list)  # pair_tsv: label values, class order


@dataclass
class FreezeConfig:
    strategy: str = "backbone"  # none | backbone | lower_k | bitfit | head_only
    k: int = 0  # lower_k: embeddings and the lowest k layers frozen; -n: all but the top n
    dropout: bool | None = None  # dropout inside the backbone; None: off when none of it trains


@dataclass
class PromptConfig:
    length: int = 20  # number of soft-prompt vectors; 0 disables the prompt
    init: str = "vocab"  # random | vocab | text
    init_text: str = ""  # init=text: the prompt starts as these tokens' embeddings
    layers: Any = "input"  # input | all | list of layer indices for deep injection
    lr: float | None = None  # learning rate of the prompt; None uses trainer.lr


@dataclass
class AlignConfig:
    weight: float = 0.0  # lambda; 0 turns the alignment loss off
    kind: str = "mse"  # mse | cosine | contrastive | kl
    temperature: float = 0.05  # contrastive tau, or the kl temperature
    pooling: str = "mean"  # mean | first
    layers: Any = "last"  # last | list of hidden-state indices to average
    warmup_steps: int = 0  # lambda ramps linearly from 0 over these steps
    source_language: str = "en"
    target_languages: list[str] = field(default_factory=list)  # empty: data.eval_languages
    parallel_file: str = ""  # TSV of source<TAB>target sentences; empty: the task's own pairs
    max_length: int = 128
    batch_size: int = 8
    report_distance: bool = False  # also measure held-out distances when weight is 0
    distance_every: int = 0  # > 0: held-out distance every n steps into train_log.jsonl
    distance_pairs: int = 256  # pairs per language in those during-training measurements


@dataclass
class AdapterConfig:
    kind: str = "none"  # a name in lowres.registry.ADAPTERS: none | lora | ia3 | peft | yours
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)  # []: chosen by `layers`
    # With target_modules []: attention = backbone.lora_targets (query and value);
    # all_linear = every linear layer inside the transformer blocks, found in the model.
    layers: str = "attention"
    peft_type: str = ""  # kind=peft: the PEFT tuner (LOHA, LOKR, VERA, ...)
    options: dict[str, Any] = field(default_factory=dict)  # more of PEFT's config arguments


@dataclass
class TrainerConfig:
    lr: float | None = None  # None: 5e-5 with freeze=none, else 1e-3 (see resolved_lr)
    epochs: float = 1.0  # 0 with max_steps <= 0: evaluate without training
    max_steps: int = -1  # > 0 overrides epochs
    # > 0: at least this many optimizer updates, whatever the data size (a k-shot stage that
    # learns at every k: epochs over k examples would give k = 8 two or three updates)
    min_steps: int = 0
    batch_size: int = 8
    eval_batch_size: int = 32
    grad_accum: int = 1
    # fp32 | bf16 (GPU, or CPU with avx512_bf16/AMX) | fp16 (GPU) | auto: bf16 where native
    precision: str = "fp32"
    group_by_length: bool = True  # training batches of similar length (less padding)
    # Dropout masks from a cheaper random draw (lowres.methods.dropout): faster CPU training
    # steps, other masks than torch's, so results differ from a run without it (opt-in).
    fast_dropout: bool = False
    seed: int = 42
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    scheduler: str = "linear"
    logging_steps: int = 10
    save_steps: int = 0  # > 0 writes resumable checkpoints every n steps
    device: str = "auto"  # auto | cpu | cuda
    tf32: bool = True  # TF32 matmuls on Ampere+ GPUs (ignored on the CPU and older cards)
    select_on: str = "source"  # source: best checkpoint on held-out source dev | last
    select_every: int = 0  # steps between selection evaluations; 0 = at each epoch end
    select_examples: int = 200  # size of the held-out source-language dev set
    dataloader_workers: int = 0
    progress: bool = True  # rich progress bars
    report_to: str = "none"  # none | tensorboard: the Trainer's TensorBoard logging


@dataclass
class DataConfig:
    source: str = "sample"  # sample (shipped in the repo) | local | hub
    root: str = ""  # data.source=local: folder with xquad/, mlqa/, pawsx/, squad/
    source_language: str = "en"  # language of the labelled training pool
    eval_languages: list[str] = field(default_factory=lambda: ["en", "de", "es"])
    k: int = 0  # target-pool training examples per eval language (0 = zero-shot)
    pool_fraction: float = 0.0  # share of target groups held out of evaluation as the pool
    max_train_examples: int = 0  # 0 = all
    max_eval_examples: int = 0  # per language; 0 = all
    # tokenized-feature cache (lowres/cache.py); "" = off; LOWRES_CACHE_DIR moves the default
    cache_dir: str = "${oc.env:LOWRES_CACHE_DIR,'~/.cache/lowres/features'}"
    source_pool: bool = True  # train on the labelled source pool; false: target k-shot only
    # XQuAD/MLQA's English pool: train (SQuAD v1.1 train, the standard protocol) |
    # dev_minus_xquad (SQuAD dev minus XQuAD's questions; offline default) | dev
    source_split: str = "dev_minus_xquad"
    # Source dev: whole articles (titles) of the source pool held out of training and scored
    # after it (metrics.json source_dev): what a hyperparameter search maximises. 0 = none.
    source_dev_articles: int = 0
    source_dev_examples: int = 0  # > 0: a seeded random sample of that many of their questions


@dataclass
class PseudoConfig:
    kind: str = "none"  # none | self_train | translate_train
    teacher: str = ""  # self_train: finished run folder whose model labels the target pool
    threshold: float = 0.0  # self_train: keep labels with confidence strictly above this
    max_examples: int = 0  # per target language, at most this many pseudo examples; 0 = all
    mix: bool = True  # true: add to the real k-shot examples; false: replace them
    files: Any = ""  # translate_train: {lang: path} or a path pattern with {lang}


@dataclass
class SearchConfig:
    """``lowres train -m hydra/sweeper=optuna``: Optuna's search (docs/study.md)."""

    objective: str = "source_dev"  # the one allowed: the source language's held-out dev
    trials: int = 8  # hydra.sweeper.n_trials
    seed: int = 0  # the sampler's seed (TPE)
    space: dict[str, str] = field(default_factory=dict)  # key -> Hydra sweep, e.g. a method's


@dataclass
class RunConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    task: TaskConfig | None = None
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    checkpoint: str = ""  # evaluate: the run folder whose trained parameters to restore
    resume: bool = False  # train: continue from the last checkpoint in the run folder
    init_from: str = ""  # train: start from this finished run's trained parameters


@dataclass
class SweepConfig:
    k: list[int] = field(default_factory=lambda: [0, 8, 32])  # shots; 0 = zero-shot
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    languages: list[str] = field(default_factory=list)  # target languages; empty: eval ones
    methods: list[str] = field(default_factory=list)  # configs/method/ names; []: as composed
    grid: dict[str, list[Any]] = field(default_factory=dict)  # other key -> values to sweep
    schedules: list[str] = field(default_factory=lambda: ["joint"])  # joint | two_stage
    stage1: list[str] = field(default_factory=list)  # overrides for two-stage source runs
    stage2: list[str] = field(default_factory=list)  # overrides for k-shot runs after stage 1
    stage1_once: bool = False  # one stage-1 run (first seed) shared by every seed's k-shot runs
    # method -> finished source-trained run folder: two-stage runs start from it, no stage 1
    stage1_from: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepRunConfig(RunConfig):
    sweep: SweepConfig = field(default_factory=SweepConfig)


GROUP_SCHEMAS = {
    "backbone": BackboneConfig,
    "task": TaskConfig,
    "freeze": FreezeConfig,
    "prompt": PromptConfig,
    "align": AlignConfig,
    "adapter": AdapterConfig,
    "trainer": TrainerConfig,
    "data": DataConfig,
    "pseudo": PseudoConfig,
}


def config_dir() -> Path:
    """The configs folder: top-level in a checkout, ``lowres/configs`` when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "configs", here / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise ConfigError(
        f"The lowres config folder was not found next to {here}; reinstall the package "
        "(pip install -e . from the repository)."
    )


def folder_name(path: str) -> str:
    """``${folder_name:PATH}`` in YAML: a model folder's own name (backbone=local's name)."""
    return Path(str(path)).expanduser().name or "local"


def register_schemas() -> None:
    """Store the schemas so YAML files can name them in their defaults list."""
    OmegaConf.register_new_resolver("folder_name", folder_name, replace=True)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(name="sweep_run_schema", node=SweepRunConfig)
    store.store(group="sweep", name="sweep_schema", node=SweepConfig)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name=f"{group}_schema", node=schema)


def _valid_keys(schema: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a schema dataclass, nested ones included (for suggestions)."""
    keys = []
    for item in dataclasses.fields(schema):
        name = f"{prefix}{item.name}"
        keys.append(name)
        default = item.default_factory() if callable(item.default_factory) else None
        if dataclasses.is_dataclass(default):
            keys += _valid_keys(type(default), f"{name}.")
    return keys


def _nearest(key: str, candidates: list[str]) -> str:
    """`` Did you mean X?``: a key with the same last part (``+seed`` -> trainer.seed, the
    trainer's first on a tie, as it holds the keys people mean), else the closest spelling."""
    tail = key.rsplit(".", 1)[-1]
    same_tail = sorted(
        (c for c in candidates if c != key and c.rsplit(".", 1)[-1] == tail),
        key=lambda c: not c.startswith("trainer."),
    )
    close = same_tail[:1] or difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


def check_override_keys(overrides: list[str]) -> None:
    """Refuse keys the schemas do not have, also when ``+``/``++`` would make Hydra add them.

    Hydra rejects ``trainer.lrr=1`` but suggests ``+trainer.lrr=1``, which it then adds to
    the config, where nothing reads it: the run trains as if the key were absent. The same
    holds for a new top-level key (``+lr=1``, ``++trainr.lr=1``). Config groups (``+task=``,
    ``+method=``, ``+experiment=``, ``hydra/launcher=``) are choices, not keys. And the
    schemas stored as ``<group>_schema`` options are building blocks, not choices.
    Overrides are read with Hydra's own parser (lowres.overrides); one it cannot parse is
    left to Hydra, whose message names the syntax error.
    """
    nested = {**GROUP_SCHEMAS, "sweep": SweepConfig, "search": SearchConfig}
    top_keys = [f.name for f in dataclasses.fields(SweepRunConfig)]
    groups = sorted(p.name for p in config_dir().iterdir() if p.is_dir())
    every_key = _valid_keys(SweepRunConfig)
    for setting in read_overrides(overrides):
        if "=" not in setting.text:
            continue
        override, key = setting.text, setting.key
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        value = setting.value()
        if key in nested and isinstance(value, str) and value.strip().endswith("_schema"):
            options = sorted(p.stem for p in (config_dir() / key).glob("*.yaml"))
            raise ConfigError(
                f"{override}: {value} is the schema behind the {key} options, not an option "
                f"itself; choose one of {', '.join(options)}."
            )
        group, _, rest = key.partition(".")
        if group not in top_keys and not (group in groups and not rest):
            what = (
                f"{group} is a config group (choose an option with +{group}=NAME), not a "
                "node of keys"
                if group in groups
                else f"lowres configs have no top-level key {group!r}"
            )
            raise ConfigError(
                f"{override}: {what}, so nothing would read {key}; the top-level keys are "
                f"{', '.join(top_keys)}.{_nearest(key, every_key)} Check the spelling (and "
                "drop a leading +: lowres configs take no new keys)."
            )
        if not rest or group not in nested:
            continue
        name = rest.split(".", 1)[0]
        known = [f.name for f in dataclasses.fields(nested[group])]
        if name not in known:
            raise ConfigError(
                f"{override}: {group} has no key {name!r}, so nothing would read it; its keys "
                f"are {', '.join(known)}.{_nearest(key, every_key)} Check the spelling (and "
                "drop a leading +: lowres configs take no new keys)."
            )


PROMPT_INITS = ("random", "vocab", "text")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
PADDINGS = ("longest", "max_length")
DTYPES = ("float32", "bfloat16", "float16")
TASK_KINDS = ("extractive_qa", "classification")
DEVICES = ("auto", "cpu", "cuda")
DATA_SOURCES = ("sample", "local", "hub")
SOURCE_SPLITS = ("train", "dev_minus_xquad", "dev")
LORA_LAYERS = ("attention", "all_linear")
REPORT_TO = ("none", "tensorboard")
# No target-language option on purpose: choosing checkpoints on target data that is also
# the test set inflates few-shot results.
SELECT_POLICIES = ("source", "last")


def _choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(
            f"{key}={value!r} is not a valid choice; expected one of {', '.join(valid)}. "
            f"Fix it on the command line, e.g. {key}={valid[0]}."
        )


def _at_least(key: str, value: float, low: float, hint: str = "") -> None:
    if value < low:
        raise ConfigError(f"{key}={value} is out of range; it must be >= {low}. {hint}".strip())


# Adam moves each weight by about lr per step. Published rates stop near 1 (prompt tuning
# uses up to 0.3, Lester et al. 2021); past 10 every step moves a weight by more than its
# own scale and training diverges, so a larger value is a typo (1e3 for 1e-3) or overflow.
MAX_LR = 10.0


def _check_finite(node: Any, prefix: str) -> None:
    """NaN and infinity compare false with every bound, so range checks alone let them in;
    a run with them trains on NaN losses and writes ``Infinity``, which JSON does not have."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for name, value in items:
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, dict | list):
            _check_finite(value, key)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{key}={value} is not a finite number; every number in a lowres config must "
                f"be finite. Give {key} a real value (see the default in configs/)."
            )


def _learning_rate(key: str, value: float | None, *, zero_ok: bool, unset: str) -> None:
    if value is None:
        return
    low = "0 <= lr" if zero_ok else "0 < lr"
    if value < 0 or (value == 0 and not zero_ok) or value > MAX_LR:
        raise ConfigError(
            f"{key}={value} is out of range; a learning rate must be in {low} <= {MAX_LR:g} "
            f"(Adam moves each weight by about lr per step, so past {MAX_LR:g} training "
            f"diverges). Give a value such as {key}=1e-3, or leave {key} out ({unset})."
        )


def validate(cfg: Any) -> None:
    """Check ranges and combinations that types cannot express; raise ConfigError."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    _check_finite({k: v for k, v in plain.items() if k != "hydra"}, "")
    FREEZING_STRATEGIES.check(cfg.freeze.strategy)
    LOADERS.check(cfg.backbone.loader)
    _check_backbone(cfg)
    _check_prompt(cfg.prompt)
    _check_align(cfg)
    _check_adapter(cfg.adapter)
    _check_trainer(cfg.trainer)
    _check_data_source(cfg.data)
    if cfg.task is not None:
        _check_task(cfg.task, cfg.data)
    _check_pseudo(cfg.get("pseudo"))  # absent from configs composed without the group
    _check_data(cfg.data)
    if cfg.task is not None:
        _check_task_fits(cfg)


def _check_backbone(cfg: Any) -> None:
    _check_backbone_source(cfg.backbone)
    _choice("backbone.family", cfg.backbone.family, ("encoder", "decoder", "auto"))
    _choice("backbone.dtype", cfg.backbone.dtype, DTYPES)
    if cfg.backbone.gradient_checkpointing and cfg.backbone.family != "decoder":
        raise ConfigError(
            "backbone.gradient_checkpointing=true is supported for decoder backbones only, "
            f"and {cfg.backbone.name} is an {cfg.backbone.family}; set "
            "backbone.gradient_checkpointing=false."
        )
    _at_least("backbone.generation_batch_size", cfg.backbone.generation_batch_size, 1)


def _check_prompt(prompt: Any) -> None:
    _at_least("prompt.length", prompt.length, 0, "Use prompt.length=0 to disable it.")
    if prompt.length == 0 and prompt.layers != "input":
        # The builder would drop the prompt while the saved config still says deep.
        raise ConfigError(
            f"prompt.length=0 turns the prompt off, but prompt.layers={prompt.layers} "
            "asks for prompts injected at depth; give prompt.length a positive value "
            "(e.g. prompt.length=20) or turn the prompt off with prompt=none."
        )
    # null = the prompt trains at trainer.lr; 0 would be recorded while trainer.lr applied.
    _learning_rate("prompt.lr", prompt.lr, zero_ok=False, unset="it then follows trainer.lr")
    _choice("prompt.init", prompt.init, PROMPT_INITS)
    if prompt.init == "text" and not prompt.init_text:
        raise ConfigError(
            "prompt.init=text needs prompt.init_text, the words whose embeddings start the "
            "prompt, e.g. prompt.init_text='answer the question'."
        )
    layers = prompt.layers
    if not (layers in ("input", "all") or _is_int_list(layers)):
        raise ConfigError(
            f"prompt.layers={layers!r} is not valid; expected input, all, or a list of layer "
            "indices such as prompt.layers=[0,3,5]."
        )


def _check_align(cfg: Any) -> None:
    _at_least("align.weight", cfg.align.weight, 0.0, "Use align.weight=0 to turn it off.")
    ALIGNMENT_LOSSES.check(cfg.align.kind)
    POOLINGS.check(cfg.align.pooling)
    if not (cfg.align.layers == "last" or _is_int_list(cfg.align.layers)):
        raise ConfigError(
            f"align.layers={cfg.align.layers!r} is not valid; expected last or a list of "
            "hidden-state indices such as align.layers=[4,6]."
        )
    _at_least("align.temperature", cfg.align.temperature, 1e-6)
    decoder = cfg.backbone.family == "decoder"
    if decoder and measures_distance(cfg.align):
        name = cfg.backbone.name
        if alignment_on(cfg.align) and compares_logits(cfg.align):
            raise ConfigError(
                f"align.kind={cfg.align.kind} distils class logits, which decoder backbone "
                f"{name} does not have (PAWS-X is scored by label words); use align.kind=mse, "
                "cosine or contrastive, which compare mean-pooled decoder hidden states."
            )
        if cfg.align.pooling != "mean":
            raise ConfigError(
                f"align.pooling={cfg.align.pooling} takes the first token, which on decoder "
                f"{name} is BOS (or the soft prompt's neighbour) for every input; use "
                "align.pooling=mean."
            )
    _at_least("align.warmup_steps", cfg.align.warmup_steps, 0)
    _at_least("align.max_length", cfg.align.max_length, 1)
    _at_least("align.batch_size", cfg.align.batch_size, 1)
    _at_least(
        "align.distance_every", cfg.align.distance_every, 0, "Use 0 to measure at the end only."
    )
    _at_least("align.distance_pairs", cfg.align.distance_pairs, 1)


def _check_adapter(adapter: Any) -> None:
    ADAPTERS.check(adapter.kind)
    _choice("adapter.layers", adapter.layers, LORA_LAYERS)
    _at_least("adapter.r", adapter.r, 1)
    _at_least("adapter.alpha", adapter.alpha, 1)
    if not 0.0 <= adapter.dropout < 1.0:
        raise ConfigError(
            f"adapter.dropout={adapter.dropout} is out of range; it is a probability in "
            "[0, 1) (e.g. adapter.dropout=0.1)."
        )


def _check_trainer(trainer: Any) -> None:
    _choice("trainer.precision", trainer.precision, PRECISIONS)
    _choice("trainer.device", trainer.device, DEVICES)
    _choice("trainer.report_to", trainer.report_to, REPORT_TO)
    if trainer.lr is not None and trainer.lr == 0 and trains(trainer):
        # lr=0 used to train the prompts (their own prompt.lr) and silently not the rest.
        raise ConfigError(
            f"trainer.lr={trainer.lr} is out of range; it must be > 0 for a run that "
            "trains (at 0 the head, adapters and unfrozen weights would never move while a "
            "prompt with its own prompt.lr did). Use trainer.epochs=0 to evaluate the model "
            "without training."
        )
    zero_ok = not trains(trainer)
    _learning_rate("trainer.lr", trainer.lr, zero_ok=zero_ok, unset="the method's rate")
    _at_least(
        "trainer.logging_steps", trainer.logging_steps, 1, "Set e.g. trainer.logging_steps=10."
    )
    _at_least("trainer.save_steps", trainer.save_steps, 0, "Use 0 to save no checkpoints.")
    _at_least("trainer.weight_decay", trainer.weight_decay, 0.0, "Use 0 for none.")
    _at_least("trainer.dataloader_workers", trainer.dataloader_workers, 0)
    # A negative epoch count used to skip training and evaluate the untrained model.
    _at_least("trainer.epochs", trainer.epochs, 0.0, "Use trainer.epochs=0 to skip training.")
    if trainer.max_steps < -1:
        raise ConfigError(
            f"trainer.max_steps={trainer.max_steps} is out of range; use a positive step "
            "count, or -1 to train for trainer.epochs."
        )
    _at_least("trainer.seed", trainer.seed, 0, "Seeds are non-negative integers.")
    if not 0.0 <= trainer.warmup_ratio < 1.0:
        raise ConfigError(
            f"trainer.warmup_ratio={trainer.warmup_ratio} is out of range; it is the share "
            "of training steps spent warming up, in [0, 1) (e.g. 0.1)."
        )
    _at_least("trainer.batch_size", trainer.batch_size, 1)
    _at_least("trainer.min_steps", trainer.min_steps, 0)
    _at_least("trainer.eval_batch_size", trainer.eval_batch_size, 1)
    _at_least("trainer.grad_accum", trainer.grad_accum, 1)
    _choice("trainer.select_on", trainer.select_on, SELECT_POLICIES)
    _at_least("trainer.select_every", trainer.select_every, 0)
    _at_least("trainer.select_examples", trainer.select_examples, 1)


def _check_data_source(data: Any) -> None:
    _choice("data.source", data.source, DATA_SOURCES)
    _choice("data.source_split", data.source_split, SOURCE_SPLITS)
    _at_least("data.source_dev_articles", data.source_dev_articles, 0)
    _at_least("data.source_dev_examples", data.source_dev_examples, 0)


def _check_task(task: Any, data: Any) -> None:
    _choice("task.padding", task.padding, PADDINGS)
    _choice("task.kind", task.kind, TASK_KINDS)
    METRICS.check(task.metric)
    for length in ("max_length", "max_question_length", "n_best", "max_answer_length"):
        _at_least(f"task.{length}", task[length], 1)
    _at_least("task.stride", task.stride, 0)
    _at_least("task.num_labels", task.num_labels, 2, "A classifier needs two classes.")
    _check_reader(task, data)


def _check_pseudo(pseudo: Any) -> None:
    if pseudo is None:
        return
    PSEUDO_KINDS.check(pseudo.kind)
    if not 0.0 <= pseudo.threshold <= 1.0:
        raise ConfigError(
            f"pseudo.threshold={pseudo.threshold} is out of range; it is a probability, "
            "so it must be in [0, 1] (pseudo.threshold=1.0 keeps no label)."
        )
    _at_least("pseudo.max_examples", pseudo.max_examples, 0, "Use 0 to keep every label.")


def _check_data(data: Any) -> None:
    _at_least("data.k", data.k, 0)
    for cap in ("max_train_examples", "max_eval_examples"):
        # -1 used to drop the last example (a Python slice [:-1]) instead of meaning "all".
        _at_least(f"data.{cap}", data[cap], 0, f"Use data.{cap}=0 for all examples.")
    if not list(data.eval_languages):
        # Caught only after training before: a run must have something to evaluate.
        raise ConfigError(
            "data.eval_languages=[] names no language to evaluate; give at least one, e.g. "
            "data.eval_languages=[en,de]."
        )
    if not 0.0 <= data.pool_fraction < 1.0:
        raise ConfigError(
            f"data.pool_fraction={data.pool_fraction} is out of range; it must be in [0, 1)."
        )
    if data.source == "local" and not data.root:
        raise ConfigError(
            "data.source=local needs data.root, the folder that holds the task's files "
            "(for example data.root=../shared/data with xquad/, mlqa/, pawsx/, squad/ in it)."
        )


def _check_task_fits(cfg: Any) -> None:
    task = cfg.task
    for lang in [cfg.data.source_language, *cfg.data.eval_languages]:
        # Local files decide for themselves: a language the release lacks (XQuAD
        # Romanian) is evaluated when its file is there, and refused by the task, with
        # the path it looked for, when not.
        if task.languages and lang not in task.languages and cfg.data.source != "local":
            raise ConfigError(
                f"Language {lang!r} is not in task {task.name}; it has "
                f"{', '.join(task.languages)}. Fix data.source_language or "
                "data.eval_languages, or, with a file of your own for it, read local "
                "files: data=local data.root=DIR."
            )
    # Decoders read one cut prompt, not strided windows.
    windows = task.kind == "extractive_qa" and cfg.backbone.family == "encoder"
    if windows and task.stride + task.max_question_length + 4 > task.max_length:
        raise ConfigError(
            f"task.stride={task.stride} leaves no room in windows of "
            f"task.max_length={task.max_length} tokens with questions of up to "
            f"task.max_question_length={task.max_question_length}; keep stride + "
            "max_question_length + 4 <= max_length (e.g. task.stride=32 at max_length=128)."
        )
    if alignment_on(cfg.align) and compares_logits(cfg.align) and task.kind != "classification":
        raise ConfigError(
            f"align.kind={cfg.align.kind} distils class predictions and needs a classification "
            f"task, but task {task.name} is {task.kind}. Use align.kind=mse, cosine or "
            "contrastive for QA."
        )


# -- derived notions: each is worked out here and nowhere else ---------------------------


def alignment_on(align: Any) -> bool:
    """Whether the alignment loss trains: a positive weight (lambda)."""
    return align.weight > 0


def compares_logits(align: Any) -> bool:
    """Whether the alignment loss compares class logits instead of pooled hidden states: what
    its registry entry declares (``compares``), so a user's loss can compare logits too."""
    return ALIGNMENT_LOSSES.trait(align.kind, "compares") == "logits"


def measures_distance(align: Any) -> bool:
    """Whether a run measures the source-target distance of parallel inputs: when the
    alignment loss trains, or when asked to (align.report_distance) without it."""
    return alignment_on(align) or bool(align.report_distance)


def trains(trainer: Any) -> bool:
    """Whether a run trains at all; trainer.epochs=0 with no max_steps evaluates as built."""
    return trainer.max_steps > 0 or trainer.epochs > 0


def selects_checkpoints(trainer: Any) -> bool:
    """Whether a run has more than one candidate checkpoint to choose from.

    Candidates come every ``select_every`` steps, or at each epoch end when it is 0; a
    step-capped run (``max_steps > 0``) only gets epoch-end candidates when asked for steps,
    since few-shot runs pass through dozens of tiny epochs.
    """
    if trainer.select_on != "source":
        return False
    return trainer.select_every > 0 or (trainer.max_steps <= 0 and trainer.epochs > 1)


def alignment_languages(align: Any, eval_languages: list[str]) -> list[str]:
    """Target languages whose task pairs the alignment loss uses (none with a parallel file)."""
    if not alignment_on(align) or align.parallel_file:
        return []
    return list(align.target_languages or eval_languages)


FULL_FINETUNING_LR = 5e-5
FROZEN_LR = 1e-3


def resolved_lr(lr: float | None, freeze_strategy: str) -> float:
    """The weights' learning rate: given, or the method's usual one.

    When every weight trains, BERT-style fine-tuning rates apply; when the backbone is frozen
    only new or small parameter sets train (head, biases, adapters), which need larger steps.
    """
    if lr is not None:
        return lr
    return FULL_FINETUNING_LR if freeze_strategy == "none" else FROZEN_LR


def _check_reader(task: Any, data: Any) -> None:
    """A task read by file pattern: a known reader of the task's kind, with a train pattern."""
    reader = task.get("reader", "")
    if not reader:
        return
    reads = READERS.load(reader).kind  # imports the reader's module: a user's is checked now
    if reads != task.kind:
        raise ConfigError(
            f"task.reader={reader} reads {reads} data, but task.kind={task.kind}; set "
            f"task.kind={reads}."
        )
    for split in dict.fromkeys(["train", task.split]):
        if not task.files.get(split):
            raise ConfigError(
                f"task.reader={reader} needs task.files.{split}, the path pattern of the "
                f"{split} files (relative to data.root, with {{lang}}); task.files holds "
                f"{sorted(task.files) or 'nothing'}. Train is the source pool, task.split the "
                "split that is pooled and evaluated."
            )
    if data.source == "hub":
        raise ConfigError(
            f"task {task.name} reads its files by pattern (task.reader={reader}); there is no "
            "Hub copy to read. Use data=local data.root=DIR with the files under DIR."
        )


def _check_backbone_source(backbone: Any) -> None:
    """The loader and path agree: a local folder is loaded as ``local``, under its own name."""
    loader, path = backbone.loader, backbone.path
    if loader == "local" and not path:
        raise ConfigError(
            "backbone=local needs backbone.path=DIR, the folder a transformers model was saved "
            "to (model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR): config.json, "
            "weights, tokenizer files); e.g. backbone=local backbone.path=models/my-bert."
        )
    if loader == "hub" and path and Path(path).expanduser().is_dir():
        # transformers would load the folder, but the run would be filed and labelled as
        # backbone.name (say mbert), which it is not.
        raise ConfigError(
            f"backbone.path={path} is a local folder, but backbone={backbone.name} loads a hub "
            f"model, so the run would be filed and labelled {backbone.name!r}. Load the folder "
            f"as itself: backbone=local backbone.path={path}."
        )
    if backbone.family == "auto" and loader != "local":
        # lowres.backbones.resolve_local replaces a local folder's "auto" at start; other
        # loaders have a fixed family in their YAML.
        raise ConfigError(
            f"backbone.family=auto is read from a local folder's config.json and works only "
            f"with backbone=local; backbone {backbone.name} uses loader {loader}. Set "
            "backbone.family=encoder or decoder."
        )


def _is_int_list(value: Any) -> bool:
    try:
        items = list(value)
    except TypeError:
        return False
    return bool(items) and all(isinstance(i, int) and not isinstance(i, bool) for i in items)
