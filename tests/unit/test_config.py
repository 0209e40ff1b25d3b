"""Config composition: every option of every group composes; bad keys and values fail early."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lowres.cli import config_groups
from lowres.errors import ConfigError
from lowres.schema import check_override_keys, config_dir, register_schemas, validate

register_schemas()


GROUP_OPTIONS = [(g, o) for g, options in config_groups().items() for o in options]


# Options that only make sense with another task than the default xquad.
TASK_FOR = {("align", "kl"): "pawsx"}
# Options that need a value the user must give.
REQUIRED = {
    ("backbone", "local"): ["backbone.path=models/my-model"],
    ("task", "tydiqa"): ["data.eval_languages=[en,ar,fi]"],  # TyDiQA has no de, es
}


def compose_train(*overrides: str, task: str = "xquad"):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=[f"+task={task}", *overrides])


# Groups that are appended (+group=option) rather than chosen in the defaults list, and the
# primary config each composes with.
APPENDED = {"method": "train", "experiment": "sweep"}


# Presets written for another task than xquad.
EXPERIMENT_TASK = {"stability": "pawsx"}


def test_groups_cover_the_documented_axes():
    groups = config_groups()
    for group in ("backbone", "task", "freeze", "prompt", "align", "adapter", "trainer", "data"):
        assert group in groups, group
    assert {"tiny-bert", "tiny-xlmr", "minilm", "mbert", "xlmr-base", "xlmr-large"} <= set(
        groups["backbone"]
    )
    assert {"none", "backbone", "lower_k", "bitfit", "head_only"} == set(groups["freeze"])


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_validates(group, option):
    if group in APPENDED:
        task = EXPERIMENT_TASK.get(option, "xquad")
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(
                config_name=APPENDED[group], overrides=[f"+task={task}", f"+{group}={option}"]
            )
    elif group == "sweep":
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="sweep", overrides=["+task=xquad", f"sweep={option}"])
    elif group == "task":
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            overrides = [f"+task={option}", *REQUIRED.get((group, option), [])]
            cfg = compose(config_name="train", overrides=overrides)
        assert cfg.task.name == option
    else:
        cfg = compose_train(
            f"{group}={option}",
            *REQUIRED.get((group, option), []),
            task=TASK_FOR.get((group, option), "xquad"),
        )
    validate(cfg)
    # the run folder stores the resolved config; it must round-trip as YAML
    assert OmegaConf.to_yaml(cfg)


@pytest.mark.parametrize("preset", config_groups()["experiment"])
def test_every_experiment_preset_plans_a_sweep(preset, tmp_path):
    from lowres.sweeps.plan import plan_from_spec

    task = EXPERIMENT_TASK.get(preset, "xquad")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="sweep", overrides=[f"+task={task}", f"+experiment={preset}"])
    spec = OmegaConf.to_container(cfg.sweep, resolve=True)
    plan = plan_from_spec(spec, spec["languages"] or list(cfg.data.eval_languages), tmp_path)
    assert len(plan.runs) >= len(spec["seeds"])
    assert cfg.data.source == "local" and cfg.backbone.name == "me5-small"
    assert all(lang in cfg.task.languages for lang in spec["languages"])


def test_method_presets_set_what_they_name():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        full = compose(config_name="train", overrides=["+task=xquad", "+method=full"])
        lora = compose(config_name="train", overrides=["+task=xquad", "+method=lora"])
        partial = compose(
            config_name="train", overrides=["+task=xquad", "+method=deep_prompt_lower_k"]
        )
    assert (full.freeze.strategy, full.prompt.length, full.trainer.lr) == ("none", 0, 1e-4)
    assert (lora.adapter.kind, lora.freeze.strategy, lora.prompt.length) == ("lora", "backbone", 0)
    assert (partial.freeze.strategy, partial.freeze.k, partial.prompt.layers) == (
        "lower_k",
        2,
        "all",
    )
    assert (partial.trainer.lr, partial.prompt.lr, partial.adapter.kind) == (1e-4, 0.01, "none")
    # The paper's method: LoRA on every linear layer (chosen on source dev, choice.md); the
    # LoRA baseline keeps the attention projections.
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        paper = compose(config_name="train", overrides=["+task=xquad", "+method=prompt_align"])
    assert (paper.adapter.kind, paper.adapter.layers, paper.align.kind) == (
        "lora",
        "all_linear",
        "contrastive",
    )
    assert lora.adapter.layers == "attention"


def test_the_quick_start_composes_full_fine_tuning_with_frozen_embeddings():
    cfg = compose_train("+method=full_frozen_embeddings", "trainer=quickstart")
    validate(cfg)
    assert cfg.backbone.name == "me5-small"
    assert (cfg.freeze.strategy, cfg.freeze.k, cfg.prompt.length) == ("lower_k", 0, 0)
    assert (cfg.trainer.lr, cfg.trainer.epochs, cfg.trainer.select_on) == (1e-4, 5.0, "last")
    assert list(cfg.data.eval_languages) == list(cfg.task.languages)
    assert len(cfg.task.languages) == 11


def test_yaml_files_open_with_the_command_that_uses_them():
    for path in config_dir().rglob("*.yaml"):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("# @")]
        assert lines[0].startswith("# lowres "), f"{path} must start with its command"


def test_misspelt_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_train("trainer.lrr=1e-3")


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="prompt.length"):
        compose_train("prompt.length=twenty")


def test_unknown_option_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="freeze"):
        compose_train("freeze=sometimes")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("freeze.strategy=sometimes", "freeze.strategy"),
        ("align.kind=l1", "align.kind"),
        ("align.weight=-0.5", "align.weight"),
        ("prompt.length=-3", "prompt.length"),
        ("prompt.layers=deep", "prompt.layers"),
        ("prompt.init=text", "prompt.init_text"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("data.source=ftp", "data.source"),
        ("data.source=local", "data.root"),
        ("data.eval_languages=[xx]", "xx"),
        ("data.pool_fraction=1.5", "data.pool_fraction"),
        ("task.max_length=128", "task.stride"),
        ("align.pooling=max", "align.pooling"),
        ("align.temperature=0", "align.temperature"),
        ("align.warmup_steps=-1", "align.warmup_steps"),
        ("align.distance_every=-1", "align.distance_every"),
        ("trainer.report_to=wandb", "trainer.report_to"),
        ("backbone.loader=ftp", "backbone.loader"),
        ("backbone.dtype=int8", "backbone.dtype"),
        ("backbone.gradient_checkpointing=true", "backbone.gradient_checkpointing"),
        ("task.padding=some", "task.padding"),
        ("task.kind=ranking", "task.kind"),
        ("prompt.init=zeros", "prompt.init"),
        ("adapter.layers=ffn", "adapter.layers"),
        # issue #18: these used to crash late or train something else than asked for
        ("data.eval_languages=[]", "data.eval_languages"),
        ("trainer.seed=-1", "trainer.seed"),
        ("trainer.lr=0", "trainer.lr"),
        ("trainer.epochs=-1", "trainer.epochs"),
        ("trainer.max_steps=-5", "trainer.max_steps"),
        ("trainer.warmup_ratio=10", "trainer.warmup_ratio"),
        # issue #29: each used to crash (NaN, 1e300, 0 steps) or run something else
        ("trainer.lr=nan", "trainer.lr=nan is not a finite number"),
        ("trainer.lr=inf", "trainer.lr=inf is not a finite number"),
        ("trainer.lr=-inf", "trainer.lr=-inf is not a finite number"),
        ("trainer.lr=1e300", "trainer.lr=1e+300 is out of range"),
        ("trainer.lr=11", "0 < lr <= 10"),
        ("trainer.lr=-1", "trainer.lr=-1.0 is out of range"),
        ("align.weight=nan", "align.weight=nan"),
        ("trainer.epochs=inf", "trainer.epochs=inf"),
        ("trainer.logging_steps=0", "trainer.logging_steps=0"),
        ("trainer.save_steps=-1", "trainer.save_steps"),
        ("trainer.weight_decay=-0.1", "trainer.weight_decay"),
        ("prompt.lr=-1", "prompt.lr=-1.0 is out of range"),
        ("prompt.lr=0", "prompt.lr=0.0 is out of range"),
        ("prompt.lr=100", "prompt.lr=100.0 is out of range"),
        ("data.max_train_examples=-1", "data.max_train_examples=-1"),
        ("data.max_eval_examples=-2", "data.max_eval_examples=-2"),
        ("prompt.length=0", "prompt.layers=all asks for prompts injected at depth"),
        ("task.max_answer_length=0", "task.max_answer_length"),
        ("task.n_best=0", "task.n_best"),
        ("task.stride=-1", "task.stride"),
        ("align.batch_size=0", "align.batch_size"),
        ("adapter.r=0", "adapter.r"),
        ("adapter.dropout=1.5", "adapter.dropout"),
    ],
)
def test_bad_values_name_the_key(override, key):
    cfg = compose_train(override)
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(cfg)


def test_local_files_decide_which_languages_a_task_has():
    # XQuAD has no Romanian; data=local reads xquad.ro.json if it is there (the task refuses
    # it, naming the file, if not), while the sample and the Hub have only their languages.
    validate(compose_train("data=local", "data.root=/data", "data.eval_languages=[en,ro]"))
    with pytest.raises(ConfigError, match="'ro' is not in task xquad"):
        validate(compose_train("data.eval_languages=[en,ro]"))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["task.reader=csv"], "task.reader"),
        (["task.reader=pair_tsv"], "task.kind=classification"),
        (["task.files.train=''"], "task.files.train"),
        (["data=hub"], "data=local"),
    ],
)
def test_file_task_settings_are_checked_at_start(overrides, needle):
    cfg = compose_train(*overrides, "data.eval_languages=[en]", task="qa_files")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate(cfg)


def test_kl_alignment_is_refused_for_qa():
    cfg = compose_train("align=kl")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == (
        "align.kind=kl distils class predictions and needs a classification task, but task "
        "xquad is extractive_qa. Use align.kind=mse, cosine or contrastive for QA."
    )


def test_kl_alignment_is_refused_on_a_decoder():
    cfg = compose_train("align=kl", "backbone=tiny-llama", task="pawsx")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value) == (
        "align.kind=kl distils class logits, which decoder backbone tiny-llama does not have "
        "(PAWS-X is scored by label words); use align.kind=mse, cosine or contrastive, which "
        "compare mean-pooled decoder hidden states."
    )


def _user_loss(tmp_path, monkeypatch, compares: str | None) -> str:
    """A user's alignment loss in a module of its own, declaring what it compares (or not)."""
    declared = f"agree.compares = {compares!r}\n" if compares else ""
    (tmp_path / "cfgtest_losses.py").write_text(
        "def agree(source, target):\n    return (source - target).abs().mean()\n\n\n" + declared
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cfgtest_losses", raising=False)
    return "align.kind=cfgtest_losses:agree"


def test_a_user_loss_that_compares_logits_is_refused_for_qa_and_on_decoders(tmp_path, monkeypatch):
    kind = _user_loss(tmp_path, monkeypatch, "logits")
    with pytest.raises(ConfigError, match=r"align\.kind=cfgtest_losses:agree distils class "
                       r"predictions and needs a classification task, but task xquad"):  # fmt: skip
        validate(compose_train(kind, "align.weight=0.1"))
    decoder = compose_train(kind, "align.weight=0.1", "backbone=tiny-llama", task="pawsx")
    with pytest.raises(ConfigError, match="decoder backbone tiny-llama does not have"):
        validate(decoder)
    validate(compose_train(kind, "align.weight=0.1", task="pawsx"))  # classification: fine


def test_a_user_loss_compares_hidden_states_unless_it_declares_logits(tmp_path, monkeypatch):
    kind = _user_loss(tmp_path, monkeypatch, None)
    validate(compose_train(kind, "align.weight=0.1", "data.pool_fraction=0.5"))


def test_a_user_loss_declaring_an_unknown_comparison_is_refused(tmp_path, monkeypatch):
    kind = _user_loss(tmp_path, monkeypatch, "tokens")
    with pytest.raises(ConfigError, match="declares compares='tokens'; expected one of "
                       "'hidden_states', 'logits'"):  # fmt: skip
        validate(compose_train(kind, "align.weight=0.1", task="pawsx"))


def test_validation_reads_what_a_built_in_loss_compares_without_torch():
    """The schema knows kl compares logits from its registry entry, not by importing it."""
    script = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from lowres.schema import config_dir, register_schemas, validate\n"
        "register_schemas()\n"
        "with initialize_config_dir(config_dir=str(config_dir()), version_base='1.3'):\n"
        "    cfg = compose(config_name='train', overrides=['+task=pawsx', 'align=kl'])\n"
        "validate(cfg)\n"
        "assert 'torch' not in sys.modules, 'validation imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_learning_rate_defaults_follow_the_freezing_strategy():
    from lowres.schema import resolved_lr

    assert resolved_lr(None, "none") == 5e-5
    for strategy in ("backbone", "lower_k", "bitfit", "head_only"):
        assert resolved_lr(None, strategy) == 1e-3
    assert resolved_lr(3e-4, "none") == 3e-4
    assert compose_train().trainer.lr is None


def test_evaluating_without_training_keeps_lr_zero_allowed():
    validate(compose_train("trainer.epochs=0", "trainer.lr=0"))


def test_values_at_the_edges_of_their_ranges_pass():
    validate(compose_train("trainer.lr=10", "prompt.lr=10", "trainer.logging_steps=1"))
    validate(compose_train("data.max_train_examples=0", "data.max_eval_examples=1"))
    validate(compose_train("prompt=none", "freeze=none"))  # length 0, layers input: no prompt
    validate(compose_train("prompt=input", "prompt.length=0"))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("+trainer.lrr=1", "trainer has no key 'lrr'"),
        ("trainer.lrr=1", "trainer has no key 'lrr'"),
        ("++data.rooot=x", "data has no key 'rooot'"),
        ("backbone=backbone_schema", "the schema behind the backbone options"),
        ("sweep.kk=[1]", "sweep has no key 'kk'"),
        # issue #29: new top-level keys, with + or ++, were added and never read
        ("+trainr.lr=1", "no top-level key 'trainr'"),
        ("+lr=1", "Did you mean trainer.lr?"),
        ("+seed=7", "Did you mean trainer.seed?"),
        ("++trainr.lr=1", "Did you mean trainer.lr?"),
        ("+method.lr=1", "method is a config group"),
        ("+experiment.k=1", "experiment is a config group"),
        ("nope=1", "no top-level key 'nope'"),
    ],
)
def test_keys_nothing_reads_are_refused(override, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_override_keys([override])


def test_known_keys_and_free_mappings_pass():
    check_override_keys(
        ["+task=xquad", "trainer.lr=1e-3", "+trainer.seed=3", "task.label_words.de=[a,b]",
         "hydra.run.dir=x", "sweep.grid={align.weight:[0,1]}", "backbone=tiny-bert",
         "+method=lora", "+experiment=kshot_curve", "hydra/launcher=local_gpus",
         "checkpoint=runs/a", "~trainer.lr", "++sweep.grid={prompt.length:[5]}"]
    )  # fmt: skip


def test_the_transformers_pin_reads_warmup_ratio_as_a_ratio():
    """trainer.warmup_ratio goes to TrainingArguments.warmup_steps, which transformers >= 5
    reads as a share of the steps when below 1 (4.x took it for a step count: no warm-up).
    The pin in pyproject.toml must not allow a version that reads it otherwise."""
    from packaging.version import Version
    from transformers import TrainingArguments

    pyproject = (config_dir().parent / "pyproject.toml").read_text()
    pinned = re.search(r'"(transformers[^"]*)"', pyproject).group(1)
    minimum = Version(re.search(r">=\s*([0-9.]+)", pinned).group(1))
    assert minimum >= Version("5.0"), pinned
    args = TrainingArguments(output_dir="/tmp/unused", warmup_steps=0.1, report_to="none")
    assert args.get_warmup_steps(200) == 20
