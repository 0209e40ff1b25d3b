"""``lowres study``'s plan and report on hand-made results (no training)."""

from __future__ import annotations

import json

import pytest
from helpers import write_study_spec

from lowres.errors import ConfigError
from lowres.sweeps import study
from lowres.sweeps.stats import holm, paired

write_spec = write_study_spec


def put(folder, per_language):
    folder.mkdir(parents=True)
    scores = {lang: {"f1": f1, "exact_match": 0.0, "n": 100} for lang, f1 in per_language.items()}
    (folder / "metrics.json").write_text(json.dumps({"per_language": scores}))


def test_the_plan_nests_stage2_seeds_in_source_seeds_once_a_search_has_chosen(tmp_path):
    spec = write_spec(tmp_path)
    assert [s.name for s in study.plan(spec)] == ["search/full", "search/prompt_align"]
    chosen = tmp_path / "results" / "search" / "full"
    chosen.mkdir(parents=True)
    best = {"params": {"trainer.lr": 3e-5}, "value": 70.0, "number": 4}
    (chosen / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    names = [s.name for s in study.plan(spec)]
    assert names[:2] == ["search/full", "source/full/seed1"]
    assert "fewshot/tydiqa/sw/full/seed3/k8/s2" in names
    assert len([n for n in names if n.startswith("fewshot/")]) == 3 * 1 * 2  # seeds x k x s2
    step = next(s for s in study.plan(spec) if s.name == "fewshot/tydiqa/sw/full/seed2/k8/s1")
    assert "trainer.lr=3e-05" in step.argv and step.needs == "source/full/seed2"
    assert "trainer.seed=1" in step.argv and f"init_from={spec.work}/source/full/seed2" in step.argv


def test_the_report_averages_stage2_seeds_first_and_corrects_the_family(tmp_path):
    spec = write_spec(tmp_path)
    results = tmp_path / "results"
    gains = {1: 2.0, 2: 3.0, 3: 4.0}  # prompt_align - full at k = 0, per source seed
    for seed in (1, 2, 3):
        put(results / f"zeroshot/tydiqa/full/seed{seed}", {"sw": 40.0 + seed, "te": 30.0})
        put(
            results / f"zeroshot/tydiqa/prompt_align/seed{seed}",
            {"sw": 40.0 + seed + gains[seed], "te": 30.0 + gains[seed]},
        )
        for s2, noise in ((1, -1.0), (2, 1.0)):
            put(results / f"fewshot/tydiqa/sw/full/seed{seed}/k8/s{s2}", {"sw": 50.0 + noise})
            put(
                results / f"fewshot/tydiqa/sw/prompt_align/seed{seed}/k8/s{s2}",
                {"sw": 50.0 + noise + (seed - 2)},  # differences -1, 0, +1
            )
    record = study.report(spec)
    averages = {(a["method"], a["k"]): a["per_source_seed"] for a in record["averages"]}
    assert averages["full", 8] == {1: 50.0, 2: 50.0, 3: 50.0}  # stage-2 noise averaged away
    assert averages["prompt_align", 0] == {1: 37.5, 2: 39.0, 3: 40.5}  # (sw + te) / 2
    first, second = record["primary"]
    expected = paired(averages["prompt_align", 0], averages["full", 0])
    assert first["mean_difference"] == pytest.approx(3.0)
    assert first["p"] == pytest.approx(expected["p"]) and first["p"] == pytest.approx(
        0.0351, abs=1e-4
    )
    assert second["mean_difference"] == pytest.approx(0.0) and second["p"] == pytest.approx(1.0)
    assert [first["p_holm"], second["p_holm"]] == pytest.approx(holm([first["p"], 1.0]))
    assert first["p_holm"] == pytest.approx(2 * first["p"]) and first["holm_rejects"] is False
    text = (results / "report" / "report.md").read_text()
    assert "| sw (n=100) | te (n=100) | target average | seeds |" in text
    assert "averaged over 2 nested stage-2 seeds" in text
    assert record["figures"] == [str(results / "report" / "tydiqa_average_vs_k.png")]
    assert (results / "report" / "tydiqa_average_vs_k.png").read_bytes()[:4] == b"\x89PNG"


def test_an_interim_report_corrects_over_the_whole_family_not_the_tested_part(tmp_path):
    spec = write_spec(tmp_path)  # a family of 2: k = 0 and k = 8 on tydiqa
    results = tmp_path / "results"
    for seed, gain in ((1, 2.0), (2, 3.0), (3, 4.0)):  # only the zero-shot results exist yet
        put(results / f"zeroshot/tydiqa/full/seed{seed}", {"sw": 40.0, "te": 30.0})
        put(results / f"zeroshot/tydiqa/prompt_align/seed{seed}", {"sw": 40 + gain, "te": 30.0})
    first, second = study.report(spec)["primary"]
    assert second["n"] == 0 and "p_holm" not in second  # not run: no test, no verdict
    # differences 1, 1.5, 2 (te adds 0 to the average): the same t as 2, 3, 4 above
    assert first["p"] == pytest.approx(paired({1: 1.0, 2: 1.5, 3: 2.0}, {1: 0, 2: 0, 3: 0})["p"])
    # the untested comparison counts as p = 1: the adjustment is for 2 tests, not for 1
    assert first["p_holm"] == pytest.approx(2 * first["p"])
    text = (results / "report" / "report.md").read_text()
    assert "Holm over all 2: the 1 not yet tested" in text
    assert f"Holm-adjusted p = {first['p_holm']:.3f}: no difference shown." in text


def test_a_stage2_search_searches_its_space_not_the_source_choice(tmp_path):
    import dataclasses

    from lowres.overrides import read_all
    from lowres.schema import config_dir

    v2 = study.load_spec(config_dir() / "study" / "v2.yaml")
    spec = dataclasses.replace(v2, results=str(tmp_path / "results"))
    for method in ("full", "prompt_align"):
        chosen = tmp_path / "results" / "search" / method
        chosen.mkdir(parents=True)
        best = {"params": {"trainer.lr": 2e-4}, "value": 60.0, "number": 1}
        (chosen / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    steps = {s.name: s for s in study.plan(spec)}
    for method in ("full", "prompt_align"):
        argv = steps[f"stage2search/{method}"].argv
        # each searched key appears once, as its sweep: neither the source search's chosen
        # rate nor the stage-2 floor (trainer.min_steps=30) fixes it
        for key, sweep in v2.methods[method].stage2_space.items():
            assert [s.text for s in read_all(argv) if s.key == key] == [f"{key}={sweep}"]
    source = steps["source/full/seed1"].argv
    assert "trainer.lr=0.0002" in source  # the source runs keep the source search's choice


def test_search_overrides_apply_to_the_source_searches_alone_in_place(tmp_path):
    spec = write_spec(
        tmp_path,
        common=["trainer.precision=fp32", "trainer.progress=false"],
        source={"search_overrides": ["trainer.precision=bf16", "trainer.warmup_ratio=0.0"]},
    )
    search = {s.name: s for s in study.plan(spec)}["search/full"].argv
    at = search.index("trainer.precision=bf16")
    # in the common override's place, so a finished search's command reads as it ran
    assert search[at + 1] == "trainer.progress=false" and "trainer.precision=fp32" not in search
    assert "trainer.warmup_ratio=0.0" in search  # a key the rest does not set comes after
    chosen = tmp_path / "results" / "search" / "full"
    chosen.mkdir(parents=True)
    best = {"params": {"trainer.lr": 2e-4}, "value": 60.0, "number": 1}
    (chosen / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    source = {s.name: s for s in study.plan(spec)}["source/full/seed1"].argv
    assert "trainer.precision=fp32" in source and "trainer.precision=bf16" not in source
    assert "trainer.warmup_ratio=0.0" not in source


def test_the_report_measures_the_k_shot_samples_overlap_from_the_kept_splits(tmp_path):
    spec = write_spec(tmp_path)
    drawn = {1: [f"q{i}" for i in range(8)], 2: [f"q{i}" for i in range(6, 14)]}  # 2 shared
    for method in ("full", "prompt_align"):
        for seed in (1, 2, 3):
            for s2, ids in drawn.items():
                run = tmp_path / f"results/fewshot/tydiqa/sw/{method}/seed{seed}/k8/s{s2}"
                put(run, {"sw": 50.0})
                (run / "data_split.json").write_text(json.dumps({"train": ids}))
    record = study.report(spec)
    assert record["samples"] == [
        {"task": "tydiqa", "language": "sw", "k": 8, "stage2_seeds": 2,
         "same_for_every_run": True, "shared_between_seeds": 2.0},
    ]  # fmt: skip
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "| tydiqa | sw | 8 | 2 | yes | 2.0 of 8 |" in text
    # one run drew other examples for its stage-2 seed: the sample is no longer shared by all
    odd = tmp_path / "results/fewshot/tydiqa/sw/full/seed3/k8/s1/data_split.json"
    odd.write_text(json.dumps({"train": [f"x{i}" for i in range(8)]}))
    sample = study.report(spec)["samples"][0]
    assert sample["same_for_every_run"] is False
    assert sample["shared_between_seeds"] == pytest.approx(10 / 6)  # 2 in five models, 0 in one


@pytest.mark.parametrize("sign, words", [(1, "is ahead of"), (-1, "is behind")])
def test_the_verdict_in_words_follows_the_corrected_test_and_its_sign(tmp_path, sign, words):
    spec = write_spec(tmp_path)
    for seed, gain in ((1, 3.0), (2, 3.1), (3, 2.9)):  # tight: passes Holm over the 2
        put(tmp_path / f"results/zeroshot/tydiqa/full/seed{seed}", {"sw": 40.0, "te": 30.0})
        put(
            tmp_path / f"results/zeroshot/tydiqa/prompt_align/seed{seed}",
            {"sw": 40.0 + sign * gain, "te": 30.0 + sign * gain},
        )
    first, _ = study.report(spec)["primary"]
    assert first["p_holm"] == pytest.approx(2 * first["p"]) and first["p_holm"] < 0.05
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    row = "A ahead (Holm, 5 %)" if sign > 0 else "A behind (Holm, 5 %)"
    assert f"| {row} |" in text
    assert (
        f"- prompt_align against full on tydiqa at k = 0, target-language average: "
        f"A − B = {sign * 3.0:+.2f} F1" in text
    )
    assert f"Holm-adjusted p = {first['p_holm']:.3f}: prompt_align {words} full." in text
    assert "- prompt_align against full on tydiqa at k = 8: not run yet." in text


def test_a_spec_with_an_unknown_key_or_comparison_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not fit the study schema.*sed"):
        write_spec(tmp_path, sed=1)
    with pytest.raises(ConfigError, match=r"primary comparison .* names k=32"):
        write_spec(tmp_path, primary=[["prompt_align", "full", 32, "tydiqa"]])


def test_the_v2_spec_is_the_pre_registered_protocol():
    from lowres.schema import config_dir

    spec = study.load_spec(config_dir() / "study" / "v2.yaml")
    assert list(spec.methods) == [  # the order its steps run in, within each stage
        "prompt_align",
        "full",
        "lora_all_linear",
        "prompt_align_no_align",
        "prompt_align_no_prompt",
    ]  # fmt: skip (full_frozen_embeddings, exploratory, was cut before its first trial)
    assert all((config_dir() / "method" / f"{m}.yaml").is_file() for m in spec.methods)
    # 5 source seeds: with 3, no comparison of the Holm family could pass (docs/study_v2.md)
    assert spec.trials >= 8 and spec.source_seeds == [1, 2, 3, 4, 5] and spec.stage2_seeds == [1, 2]
    assert "trainer.min_steps=30" in spec.stage2 and spec.k == [8, 32]
    assert all(
        set(m.stage2_space) == {"trainer.lr", "trainer.min_steps"} for m in spec.methods.values()
    )
    assert spec.evaluate == ["data.max_eval_examples=0"]  # no cap from the source runs
    assert set(spec.methods["prompt_align"].space) == {
        "trainer.lr",
        "align.weight",
        "prompt.length",
    }
    assert len(spec.primary) == 16 and {c[1] for c in spec.primary} == set(spec.methods) - {
        "prompt_align"
    }
    # amended: the later steps in fp32 (any machine runs it); the finished searches as they ran
    assert "trainer.precision=fp32" in spec.common
    assert spec.source.search_overrides == ["trainer.precision=bf16"]
    assert (
        spec.tasks["tydiqa"].few_shot == ["sw", "te"] and len(spec.tasks["tydiqa"].zero_shot) == 9
    )


def test_a_stage2_space_plans_an_english_k_shot_search_before_the_few_shot_runs(tmp_path):
    space = {"trainer.lr": "tag(log,interval(1e-5,1e-3))", "trainer.min_steps": "choice(30,60)"}
    spec = write_spec(
        tmp_path,
        methods={"full": {"stage2_space": space}},
        stage2=["trainer.min_steps=30"],
        primary=[],
    )
    folder = tmp_path / "results" / "search" / "full"
    folder.mkdir(parents=True)
    best = {"params": {"trainer.lr": 3e-5}, "value": 70.0, "number": 0}
    (folder / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    steps = {s.name: s for s in study.plan(spec)}
    stage2 = steps["stage2search/full"]
    assert stage2.kind == "search" and stage2.needs == "source/full/seed1"
    for expected in (
        "data.k=32",
        "data.source_pool=false",
        "data.source_dev_articles=5",
        "trainer.min_steps=choice(30,60)",
        f"init_from={spec.work}/source/full/seed1",
    ):
        assert expected in stage2.argv  # fmt: skip
    assert not [n for n in steps if n.startswith("fewshot/")]  # waiting for stage 2's choice
    assert study.status(spec)["waiting_for_search"] == ["full (stage 2)"]
    folder = tmp_path / "results" / "stage2search" / "full"
    folder.mkdir(parents=True)
    best = {"params": {"trainer.lr": 2e-5, "trainer.min_steps": 60}, "value": 60.0, "number": 3}
    (folder / "search.json").write_text(json.dumps({"best": best, "trials": []}))
    fewshot = [s for s in study.plan(spec) if s.name.startswith("fewshot/")]
    assert len(fewshot) == 6
    argv = fewshot[0].argv
    # the stage-2 choice comes after the fixed stage-2 overrides, so it is what Hydra keeps
    assert argv.index("trainer.min_steps=60") > argv.index("trainer.min_steps=30")
    assert argv.index("trainer.lr=2e-05") > argv.index("trainer.lr=3e-05")


def test_the_report_lists_a_running_search_by_its_kept_trials_without_a_choice(tmp_path):
    spec = write_spec(tmp_path, trials=8)
    for trial in (0, 1):
        put(tmp_path / "results" / "search" / "prompt_align" / str(trial), {"en": 60.0})
    stage2 = tmp_path / "results" / "stage2search" / "full"
    put(stage2 / "0", {"en": 61.0})
    best = {"params": {"trainer.lr": 2e-5, "trainer.min_steps": 60}, "value": 61.0, "number": 0}
    (stage2 / "search.json").write_text(json.dumps({"best": best, "trials": [{}] * 8}))
    study.report(spec)
    text = (tmp_path / "results" / "report" / "report.md").read_text()
    assert "| prompt_align | source | 2 of 8 (running) | – | – |" in text
    assert "| full | source |" not in text.split("## Searches")[1]  # no trial kept: not listed
    row = "| full | stage 2 | 8 | trial 0: trainer.lr=2e-05, trainer.min_steps=60 | 61.00 |"
    assert row in text


def test_the_report_sets_superseded_runs_beside_the_runs_that_replaced_them(tmp_path):
    spec = write_spec(tmp_path)
    results = tmp_path / "results"

    def source_run(folder, f1):
        folder.mkdir(parents=True)
        dev = {"language": "en", "f1": f1, "exact_match": 0.0, "n": 500}
        (folder / "metrics.json").write_text(json.dumps({"source_dev": dev, "per_language": {}}))

    for seed, f1 in ((1, 66.0), (2, 64.0), (3, 70.0)):
        source_run(results / f"superseded/bf16/source/full/seed{seed}", f1)
    for seed, f1 in ((1, 67.0), (2, 66.0)):  # seed 3 not run again yet
        source_run(results / f"source/full/seed{seed}", f1)
    (group,) = study.report(spec)["superseded"]
    assert group["label"] == "bf16"
    assert [(r["step"], r["superseded"], r["now"]) for r in group["runs"]] == [
        ("source/full/seed1", 66.0, 67.0), ("source/full/seed2", 64.0, 66.0),
        ("source/full/seed3", 70.0, None),
    ]  # fmt: skip
    difference = group["now_minus_superseded"]
    assert difference["n"] == 2 and difference["mean_difference"] == pytest.approx(1.5)
    assert difference["ci95_low"] == pytest.approx(1.5 - 12.706 * 0.5, abs=1e-3)
    text = (results / "report" / "report.md").read_text()
    assert "## Superseded runs beside the runs that replaced them (exploratory)" in text
    assert "| source/full/seed2 | source dev F1 | 64.0 | 66.0 | +2.0 |" in text
    assert "| source/full/seed3 | source dev F1 | 70.0 | not run yet |  |" in text
    assert "over the 2 runs both have: +1.50 [-4.85, +7.85]" in text
