"""``lowres sweep`` and ``lowres report`` on the tiny backbone: plans, reruns, failures, tables."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from hydra import compose, initialize_config_dir

from lowres.errors import ConfigError
from lowres.schema import config_dir, register_schemas
from lowres.sweeps.plan import grid_replaces, plan_sweep

register_schemas()


def finished_source(tmp_path):
    """A source run folder as sweep.stage1_from accepts it: metrics.json and checkpoint/."""
    source = tmp_path / "source"
    (source / "checkpoint").mkdir(parents=True)
    # The fields every finished run's metrics.json has (a damaged one is no finished run).
    (source / "metrics.json").write_text('{"task": "xquad", "per_language": {}, "average": {}}')
    return source


def test_selection_callback_restores_the_best_state():
    import torch

    from lowres.training.selection import CheckpointSelection

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))

        def trainable_state_dict(self):
            return {"weight": self.weight.detach()}

    model = Model()
    scores = iter([1.0, 5.0, 3.0])
    selection = CheckpointSelection(lambda: next(scores), every=1)

    class State:
        global_step = 0

    for step, value in enumerate([1.0, 2.0, 3.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        State.global_step = step
        selection.on_step_end(None, State, None, model=model)
    selection.on_train_end(None, State, None, model=model)
    assert selection.best_step == 2
    assert model.weight.tolist() == [2.0, 2.0]
    assert [h["score"] for h in selection.history] == [1.0, 5.0, 3.0]


def test_plan_counts_and_zero_shot_collapses_languages(tmp_path):
    plan = plan_sweep(
        k_values=[0, 8, 32],
        seeds=[1, 2, 3],
        languages=["de", "es", "zh"],
        methods=["deep_prompt", "full"],
        grid={},
        schedules=["joint"],
        sweep_dir=tmp_path,
    )
    # k = 0: one run per (method, seed) evaluated on every language; k > 0: one per language.
    assert len(plan.runs) == 2 * 3 * (1 + 2 * 3)
    zero = [r for r in plan.runs if r.k == 0]
    assert all(r.languages == ["de", "es", "zh"] for r in zero)
    two = plan_sweep(
        k_values=[0, 8],
        seeds=[1],
        languages=["de"],
        methods=[],
        grid={"prompt.length": [5, 10]},
        schedules=["two_stage"],
        stage1=["trainer.max_steps=3"],
        sweep_dir=tmp_path,
    )
    assert [r.stage for r in two.runs] == [1, 2, 1, 2]
    assert two.runs[1].depends_on == two.runs[0].name
    assert "prompt.length=10" in two.runs[3].overrides
    once = plan_sweep(
        k_values=[0, 8],
        seeds=[1, 2],
        languages=["de"],
        methods=[],
        grid={},
        schedules=["two_stage"],
        stage1_once=True,
        sweep_dir=tmp_path,
    )
    assert [r.name.split("/")[-1] for r in once.runs] == [
        "stage1_seed1",
        "k8_de_seed1",
        "k8_de_seed2",
    ]
    assert once.runs[2].depends_on == once.runs[0].name


def test_stage1_from_plans_no_stage_one_run(tmp_path):
    source = finished_source(tmp_path)
    plan = plan_sweep(
        k_values=[0, 8],
        seeds=[1, 2],
        languages=["de", "zh"],
        methods=["full", "lora"],
        grid={},
        schedules=["two_stage"],
        stage1_from={"full": str(source)},
        stage2=["trainer.max_steps=5"],
        sweep_dir=tmp_path / "s",
    )
    full = [r for r in plan.runs if r.method == "full"]
    assert [r.name.split("/")[-1] for r in full] == [
        "k0_all_seed1",
        "k8_de_seed1",
        "k8_zh_seed1",
        "k8_de_seed2",
        "k8_zh_seed2",
    ]  # the given run is scored once at k = 0, not once per seed
    assert all(f"init_from={source}" in r.overrides and not r.depends_on for r in full)
    assert "trainer.epochs=0" in full[0].overrides and full[0].languages == ["de", "zh"]
    assert "trainer.max_steps=5" in full[1].overrides
    # lora has no given run, so it trains its own stage 1 per seed as before.
    lora = [r for r in plan.runs if r.method == "lora"]
    assert [r.stage for r in lora] == [1, 2, 2, 1, 2, 2]


@pytest.mark.parametrize(
    ("stage1_from", "extra", "message"),
    [
        ({"full": "SOURCE"}, {"schedules": ["joint"]}, "add two_stage"),
        ({"bitfit": "SOURCE"}, {}, "not in sweep.methods"),
        ({"full": "MISSING"}, {}, "is not a finished training run"),
        ({"full": "SOURCE"}, {"grid": {"align.weight": [0.1, 0.2]}}, "every point of sweep.grid"),
    ],
)
def test_stage1_from_is_checked(tmp_path, stage1_from, extra, message):
    source = finished_source(tmp_path)
    paths = {"SOURCE": str(source), "MISSING": str(tmp_path / "missing")}
    spec = dict(
        k_values=[0, 8],
        seeds=[1],
        languages=["de"],
        methods=["full"],
        grid={},
        schedules=["two_stage"],
        sweep_dir=tmp_path / "s",
    )
    with pytest.raises(ConfigError, match=message):
        plan_sweep(**{**spec, **extra}, stage1_from={m: paths[p] for m, p in stage1_from.items()})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"grid": {"trainer.max_steps": [10, 20]}, "stage2": ["trainer.max_steps=40"]},
            "trainer.max_steps is swept by sweep.grid and also set by sweep.stage2",
        ),
        ({"grid": {"prompt.lr": [0.1]}, "stage1": ["prompt.lr=0.2"]}, "set by sweep.stage1"),
        ({"grid": {"data.k": [1]}}, "which the sweep itself varies"),
        ({"stage1": ["trainer.seed=3"]}, "which the sweep itself varies"),
        ({"schedules": ["sequential"]}, "expected joint and/or two_stage"),
        ({"methods": ["deep"]}, "no method/deep.yaml"),
        ({"k_values": [-1]}, "negative k"),
    ],
)
def test_plan_refuses_bad_sweeps(tmp_path, kwargs, message):
    spec = dict(
        k_values=[0, 8],
        seeds=[1],
        languages=["de"],
        methods=[],
        grid={},
        schedules=["joint"],
        sweep_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match=message):
        plan_sweep(**{**spec, **kwargs})


def test_report_plots_the_gxlt_matrix_and_labels_pseudo_runs(tmp_path):
    """A hand-made sweep folder: two seeds of an MLQA G-XLT run, one of them pseudo-labelled."""
    from lowres.runfolder import RunFolder, RunMetrics
    from lowres.sweeps.report import write_report

    sweep_dir = tmp_path / "s"
    runs = []
    for seed, de_en in ((1, 40.0), (2, 50.0)):
        name = f"deep_prompt/base/joint/k0_all_seed{seed}"
        runs.append(
            {
                "name": name,
                "method": "deep_prompt",
                "grid": {},
                "schedule": "joint",
                "k": 0,
                "seed": seed,
                "stage": 0,
            }
        )
        per_language = {
            "de-en": {"f1": de_en, "exact_match": 1.0, "n": 3},
            "en-de": {"f1": 60.0, "exact_match": 1.0, "n": 3},
        }
        table = {
            "context_languages": ["en", "de"],
            "question_languages": ["en", "de"],
            "f1": {"en": {"en": None, "de": 60.0}, "de": {"en": de_en, "de": None}},
        }
        metrics = RunMetrics(
            task="mlqa",
            backbone="tiny-bert",
            per_language=per_language,
            average={"f1": (de_en + 60.0) / 2, "exact_match": 1.0},
            trainable_parameters=1,
            total_parameters=2,
            eval_runtime_s=0.0,
            task_extras={"gxlt": table},
            selection={"policy": "last"},
            pseudo={"kind": "self_train"},
        )
        RunFolder(sweep_dir / "runs" / name).write_metrics(metrics)
    (sweep_dir / "sweep.json").write_text(
        json.dumps({"task": "mlqa", "runs": runs, "sweep": {"k": [0]}})
    )
    report = write_report(sweep_dir)
    gxlt = sweep_dir / "report" / "mlqa_gxlt_deep_prompt__pseudo_self_train_k0.png"
    assert str(gxlt) in report["figures"] and gxlt.read_bytes()[:4] == b"\x89PNG"
    row = next(r for r in report["rows"] if r["language"] == "de-en")
    assert row["method"] == "deep_prompt +pseudo:self_train"
    assert (row["mean"], row["min"], row["max"], row["n"]) == (45.0, 40.0, 50.0, 2)
    assert row["std"] == pytest.approx(statistics.stdev([40.0, 50.0]))
    assert row["cv"] == pytest.approx(row["std"] / 45.0)
    avg = next(r for r in report["rows"] if r["language"] == "avg")
    assert avg["mean"] == pytest.approx((50.0 + 55.0) / 2)  # per-seed averages 50 and 55


def _sweep_config():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="sweep", overrides=["+task=xquad", "backbone=tiny-bert"])


def test_grid_keys_are_config_keys_or_groups():
    from lowres.sweeps.plan import check_grid_keys

    config = _sweep_config()
    check_grid_keys({"align.weight": [0, 0.1], "freeze": ["none", "bitfit"]}, config)
    with pytest.raises(ConfigError, match=r"'prompt.lenght'.*Did you mean prompt.length"):
        check_grid_keys({"prompt.lenght": [5]}, config)
    with pytest.raises(ConfigError, match="group freeze over nonee, which it does not have"):
        check_grid_keys({"freeze": ["nonee"]}, config)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"prompt.length": [5, "five"]}, "gives prompt.length the value 'five', which it cannot"),
        ({"trainer.lr": [1e-3, float("nan")]}, "trainer.lr=nan is not a finite number"),
        ({"prompt.length": [-1]}, "prompt.length=-1 is out of range"),
        ({"data.max_train_examples": [0, -1]}, "data.max_train_examples=-1 is out of range"),
    ],
)
def test_grid_values_are_checked_with_the_schema_at_plan_time(grid, message):
    """They used to be planned, then fail run by run."""
    from lowres.sweeps.plan import check_grid_keys

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_grid_keys(grid, _sweep_config())
    check_grid_keys({"prompt.length": [5, 10], "trainer.lr": [1e-3, 1e-2]}, _sweep_config())


def test_user_method_presets_come_from_their_config_folder(tmp_path):
    from lowres.sweeps.plan import method_keys, user_config_dirs

    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - deep_prompt\nprompt:\n  length: 7\n"
    )
    folders = user_config_dirs([f"file://{tmp_path}", "pkg://somewhere.configs"])
    assert folders == [tmp_path]
    # Its own key and those of the lowres preset it extends.
    assert {"prompt.length", "prompt.lr", "freeze"} <= method_keys("mine", folders)
    plan = plan_sweep(
        k_values=[0],
        seeds=[1],
        languages=["de"],
        methods=["mine", "full"],
        grid={},
        schedules=["joint"],
        sweep_dir=tmp_path,
        config_dirs=folders,
    )
    assert [r.overrides[0] for r in plan.runs] == ["+method=mine", "+method=full"]
    with pytest.raises(ConfigError, match="no method/theirs.yaml is in the config folders"):
        method_keys("theirs", folders)


def test_untrained_runs_once_per_seed(tmp_path):
    plan = plan_sweep(
        k_values=[0, 8],
        seeds=[1, 2],
        languages=["de", "es"],
        methods=["untrained", "full"],
        grid={},
        schedules=["joint", "two_stage"],
        sweep_dir=tmp_path,
    )
    floor = [r for r in plan.runs if r.method == "untrained"]
    assert [(r.name, r.k, r.languages) for r in floor] == [
        (f"untrained/base/joint/k0_all_seed{s}", 0, ["de", "es"]) for s in (1, 2)
    ]
    assert "trainer.epochs" not in " ".join(floor[0].overrides)  # the preset sets it


@pytest.mark.parametrize(
    ("methods", "grid", "replaced"),
    [
        (["prompt_align", "full"], {"align.weight": [0, 1.0]}, {"prompt_align": ["align.weight"]}),
        (["deep_prompt_lower_k"], {"prompt.lr": [0.1]}, {"deep_prompt_lower_k": ["prompt.lr"]}),
        (["bitfit", "lora"], {"freeze": ["none"]}, {"bitfit": ["freeze"], "lora": ["freeze"]}),
        (["full"], {"align.weight": [0, 1.0]}, {}),
    ],
)
def test_grid_replaces_what_a_method_sets(methods, grid, replaced):
    assert grid_replaces(methods, grid) == replaced


@pytest.mark.parametrize(
    ("grid", "key", "expected"),
    [
        ({"align.weight": [0, 1.0]}, "weight", [0.0, 1.0]),  # prompt_align sets 0.1
        ({"align": ["mse", "cosine"]}, "kind", ["mse", "cosine"]),  # prompt_align: contrastive
    ],
)
def test_a_grid_point_wins_over_the_method_preset(tmp_path, grid, key, expected):
    plan = plan_sweep(
        k_values=[0],
        seeds=[1],
        languages=["de"],
        methods=["prompt_align"],
        grid=grid,
        schedules=["joint"],
        sweep_dir=tmp_path,
    )
    composed = []
    for run in plan.runs:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="sweep", overrides=["+task=xquad", *run.overrides])
        composed.append(cfg.align[key])
        assert cfg.prompt.layers == "all" and cfg.adapter.kind == "lora"  # the rest: the preset's
    assert composed == expected


def test_stage1_from_takes_a_one_point_grid_that_labels_its_rows(tmp_path):
    source = finished_source(tmp_path)
    plan = plan_sweep(
        k_values=[0, 8],
        seeds=[1],
        languages=["de"],
        methods=["prompt_align"],
        grid={"adapter.layers": ["all_linear"]},
        schedules=["two_stage"],
        stage1_from={"prompt_align": str(source)},
        sweep_dir=tmp_path / "s",
    )
    assert [r.name for r in plan.runs] == [
        "prompt_align/adapter.layers=all_linear/two_stage/k0_all_seed1",
        "prompt_align/adapter.layers=all_linear/two_stage/k8_de_seed1",
    ]
    assert all("adapter.layers=all_linear" in r.overrides for r in plan.runs)
    assert all(r.grid == {"adapter.layers": "all_linear"} for r in plan.runs)
