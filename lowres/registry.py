"""One registry per pluggable kind: the only list of that kind's names.

A registry maps each name to the import path (``module:attribute``) of what implements it and
imports it on first use. So this module imports nothing of the library and sits below the
schema, which checks config values against the registries' names without loading torch, while
the implementations stay in their own layers (losses, methods, tasks, metrics) and know no
config.

A name is found in one of three places, in this order:

1. the built-in entries below;
2. an installed package's entry point in the group ``lowres.<kind>`` (``lowres.align``,
   ``lowres.adapter``, ``lowres.reader``, ``lowres.metric``, ...), e.g. in its pyproject.toml:
   ``[project.entry-points."lowres.align"]`` ``squared_cosine = "mypkg.losses:squared_cosine"``;
3. the import path itself used as the name: ``align.kind: mypkg.losses:squared_cosine``
   (the package only has to be importable: installed, or on ``PYTHONPATH``).

What an entry must be is said by each registry's ``contract``; docs/guides/extending.md has
an example of each. An entry may also declare a trait, an attribute that says how it is used
(an alignment loss's ``compares``): a built-in entry's traits are written here, so the schema
reads them without importing the entry, and a user's entry carries them as attributes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from lowres.errors import ConfigError


def is_import_path(name: str) -> bool:
    """``package.module:attribute``: a name that says where its implementation is."""
    module, sep, attribute = name.partition(":")
    return bool(sep and module and attribute) and all(
        part.isidentifier() for part in [*module.split("."), *attribute.split(".")]
    )


def load_import_path(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Registry:
    """The names of one pluggable kind and where each one's implementation lives."""

    group: str  # entry-point group suffix: lowres.<group>
    key: str  # the config key that names an entry, for messages
    contract: str  # what an entry is, for messages and the guide
    builtins: Mapping[str, str]  # name -> module:attribute
    # trait -> its values, the first the default for an entry that declares none
    traits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    declared: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # built-ins' traits

    def plugins(self) -> dict[str, str]:
        """Names installed packages add through entry points (group ``lowres.<group>``)."""
        return {ep.name: ep.value for ep in entry_points(group=f"lowres.{self.group}")}

    def names(self) -> tuple[str, ...]:
        """Every name this kind has now: built-in first, then installed plugins."""
        return tuple(dict.fromkeys([*self.builtins, *self.plugins()]))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.names() or is_import_path(name))

    def target(self, name: str) -> str:
        """The import path behind ``name``; ConfigError naming the choices if there is none."""
        if name in self.builtins:
            return self.builtins[name]
        plugins = self.plugins()
        if name in plugins:
            return plugins[name]
        if is_import_path(name):
            return name
        raise ConfigError(
            f"{self.key}={name!r} is not a known choice; expected one of "
            f"{', '.join(self.names())}, or the import path (module:attribute) of your own "
            f"{self.contract}. Fix it on the command line, e.g. {self.key}={self.default()}, "
            "or see docs/guides/extending.md."
        )

    def __getitem__(self, name: str) -> Any:
        return self.load(name)

    def default(self) -> str:
        return next(iter(self.builtins))

    def load(self, name: str) -> Any:
        """What implements ``name``, imported now; ConfigError if it cannot be."""
        path = self.target(name)
        try:
            return load_import_path(path)
        except (ImportError, AttributeError) as error:
            if path in self.builtins.values():
                raise  # a built-in entry that does not import is a bug in lowres
            raise ConfigError(
                f"{self.key}={name!r} points to {path}, which cannot be imported ({error}). "
                f"It must be a {self.contract}; check that its package is installed or on "
                "PYTHONPATH and that the module defines that name."
            ) from None

    def trait(self, name: str, trait: str) -> str:
        """What the entry ``name`` declares for ``trait``: a built-in's from this registry
        (nothing imported), anyone else's from the attribute of that name on what implements
        it; the default when it declares none. ConfigError for a value the trait does not have.
        """
        values = self.traits[trait]
        if name in self.builtins:
            return self.declared.get(name, {}).get(trait, values[0])
        value = getattr(self.load(name), trait, values[0])
        if value not in values:
            raise ConfigError(
                f"{self.key}={name!r} declares {trait}={value!r}; expected one of "
                f"{', '.join(map(repr, values))} ({self.contract}). Fix the attribute {trait} "
                f"on {self.target(name)}, or leave it out for {values[0]!r}."
            )
        return value

    def check(self, name: str) -> None:
        """Validate a configured name at start: built-in names cost nothing, the others are
        imported now so a misspelt module fails before any training."""
        if name not in self.builtins:
            self.load(name)


ALIGNMENT_LOSSES = Registry(
    group="align",
    key="align.kind",
    contract="alignment loss: a function (source, target, **options) -> scalar tensor, "
    "taking any of the options temperature; its attribute compares says what it is given: "
    "'hidden_states' (pooled, the default) or 'logits' (a classification task's class logits)",
    builtins={
        "mse": "lowres.losses.alignment:mse",
        "cosine": "lowres.losses.alignment:cosine",
        "contrastive": "lowres.losses.alignment:contrastive",
        "kl": "lowres.losses.alignment:kl",
    },
    traits={"compares": ("hidden_states", "logits")},
    declared={"kl": {"compares": "logits"}},
)

POOLINGS = Registry(
    group="pooling",
    key="align.pooling",
    contract="pooling: a function (hidden_states [B, T, H], mask [B, T]) -> [B, H]",
    builtins={
        "mean": "lowres.losses.alignment:mean_pool",
        "first": "lowres.losses.alignment:first_pool",
    },
)

FREEZING_STRATEGIES = Registry(
    group="freeze",
    key="freeze.strategy",
    contract="freezing strategy: a function (model, k) -> predicate on parameter names that "
    "stay trainable",
    builtins={
        "backbone": "lowres.methods.freezing:freeze_backbone",
        "none": "lowres.methods.freezing:freeze_none",
        "lower_k": "lowres.methods.freezing:freeze_lower_k",
        "bitfit": "lowres.methods.freezing:freeze_bitfit",
        "head_only": "lowres.methods.freezing:freeze_head_only",
    },
)

ADAPTERS = Registry(
    group="adapter",
    key="adapter.kind",
    contract="adapter: an object with peft (bool), default_targets(adapter, model, "
    "backbone_targets) and peft_config(adapter) -> a PEFT config or None "
    "(lowres.methods.adapters.PeftAdapter)",
    builtins={
        "none": "lowres.methods.adapters:NO_ADAPTER",
        "lora": "lowres.methods.adapters:LORA",
        "ia3": "lowres.methods.adapters:IA3",
        "peft": "lowres.methods.adapters:ANY_PEFT",
    },
)

READERS = Registry(
    group="reader",
    key="task.reader",
    contract="dataset reader: a lowres.tasks.files.FileTask subclass with read(path) and tag() "
    "and a task kind",
    builtins={
        "squad_files": "lowres.tasks.files:SquadFilesTask",
        "pair_tsv": "lowres.tasks.files:PairTsvTask",
    },
)

METRICS = Registry(
    group="metric",
    key="task.metric",
    contract="metric: an evaluate module folder (a path) or an object with compute("
    "predictions=..., references=...) -> dict of scores",
    builtins={
        "squad": "lowres.metrics:SQUAD_V1",
        "mlqa": "lowres.metrics:MLQA_V1",
        "accuracy": "lowres.metrics:ACCURACY",
    },
)

LOADERS = Registry(
    group="loader",
    key="backbone.loader",
    contract="backbone loader: a function (*, name, path, architecture, trust) -> the folder "
    "or Hub id from_pretrained loads",
    builtins={
        "hub": "lowres.backbones:hub_source",
        "tiny": "lowres.backbones:tiny_source",
        "packaged": "lowres.backbones:packaged_source",
        "converted": "lowres.backbones:converted_source",
        "local": "lowres.backbones:local_source",
    },
)

TASKS = Registry(
    group="task",
    key="task.name",
    contract="task: a lowres.tasks.base.Task subclass",
    builtins={
        "xquad": "lowres.tasks.xquad:XQuADTask",
        "mlqa": "lowres.tasks.mlqa:MLQATask",
        "pawsx": "lowres.tasks.pawsx:PAWSXTask",
    },
)

PSEUDO_KINDS = Registry(
    group="pseudo",
    key="pseudo.kind",
    contract="pseudo-data kind: a function (task, target_languages, real_records, **options) "
    "-> lowres.recipes.pseudo.PseudoData or None",
    builtins={
        "none": "lowres.recipes.pseudo:no_pseudo_data",
        "self_train": "lowres.recipes.pseudo:self_train_data",
        "translate_train": "lowres.recipes.pseudo:translate_train_data",
    },
)
