"""``lowres report`` on hand-made sweep folders: intervals, paired comparisons, swept keys."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from helpers import run_lowres

from lowres.errors import LowresError
from lowres.runfolder import RunFolder, RunMetrics
from lowres.sweeps.report import write_report
from lowres.sweeps.stats import holm, holm_family, paired, summary, t_quantile


def test_t_quantile_matches_the_printed_tables():
    # Student's t, two-sided 95 %: the values every statistics table prints.
    for df, expected in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281)):
        assert t_quantile(df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(200) == pytest.approx(1.9719, abs=1e-4)


def test_summary_gives_the_95_percent_t_interval_by_hand():
    scores = [40.0, 44.0, 48.0]  # mean 44, sample std 4
    row = summary(scores)
    half = 4.302652729749464 * 4.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n) = 9.9366
    assert (row["mean"], row["std"], row["n"]) == (44.0, 4.0, 3)
    assert row["ci95_low"] == pytest.approx(44.0 - half)
    assert row["ci95_high"] == pytest.approx(44.0 + half)
    assert row["ci95_high"] - row["ci95_low"] == pytest.approx(19.8732, abs=1e-4)
    one = summary([50.0])
    assert one["std"] is None and one["ci95_low"] is None  # one seed: no interval


def test_paired_comparison_separates_a_consistent_gain_from_seed_noise():
    # A beats B by 2, 3 and 4 points on the same three seeds, while each method's own
    # scores vary by 20 points from seed to seed: a clear paired difference.
    a = {1: 32.0, 2: 43.0, 3: 54.0}
    b = {1: 30.0, 2: 40.0, 3: 50.0}
    result = paired(a, b)
    assert result["seeds"] == [1, 2, 3] and result["n"] == 3
    assert result["mean_difference"] == pytest.approx(3.0)
    assert result["std_difference"] == pytest.approx(1.0)
    half = 4.302652729749464 * 1.0 / math.sqrt(3)
    assert (result["ci95_low"], result["ci95_high"]) == pytest.approx((3 - half, 3 + half))
    assert result["t"] == pytest.approx(3.0 / (1.0 / math.sqrt(3)))
    assert result["larger_than_seed_spread"] is True
    noisy = paired({1: 35.0, 2: 38.0, 3: 51.0}, b)  # +5, -2, +1: the interval holds 0
    assert noisy["mean_difference"] == pytest.approx(4 / 3)
    assert noisy["larger_than_seed_spread"] is False
    only = paired({1: 35.0, 4: 1.0}, b)  # seed 4 has no partner
    assert only["seeds"] == [1] and only["larger_than_seed_spread"] is None


def _write_run(sweep_dir, runs, *, method, grid, k, seed, scores, train_steps=5, task="xquad"):
    label = ",".join(f"{key}={v}" for key, v in grid.items()) or "base"
    name = f"{method}/{label}/joint/k{k}_seed{seed}"
    runs.append(
        {
            "name": name,
            "method": method,
            "grid": grid,
            "schedule": "joint",
            "k": k,
            "seed": seed,
            "stage": 0,
        }
    )
    metric = "accuracy" if task == "pawsx" else "f1"
    per_language = {
        lang: {metric: v, "n": 10, **({"majority_class": 58.0} if task == "pawsx" else {})}
        for lang, v in scores.items()
    }
    RunFolder(sweep_dir / "runs" / name).write_metrics(
        RunMetrics(
            task=task,
            backbone="tiny-bert",
            per_language=per_language,
            average={metric: statistics.fmean(scores.values())},
            trainable_parameters=1,
            total_parameters=2,
            eval_runtime_s=0.0,
            train_steps=train_steps,
            selection={"policy": "last"},
        )
    )


@pytest.fixture
def lambda_sweep(tmp_path):
    """deep_prompt over align.weight in {0, 0.1}, full, and an untrained run; 3 seeds."""
    sweep_dir = tmp_path / "s"
    runs: list[dict] = []
    for seed, shift in ((1, 0.0), (2, 10.0), (3, 20.0)):
        for weight, gain in ((0, 0.0), (0.1, 2.0 + seed)):  # lambda=0.1 wins by 3, 4, 5
            scores = {"de": 30.0 + shift + gain, "es": 20.0 + shift + gain}
            _write_run(
                sweep_dir, runs, method="deep_prompt", grid={"align.weight": weight}, k=8,
                seed=seed, scores=scores,
            )  # fmt: skip
        _write_run(
            sweep_dir, runs, method="full", grid={}, k=8, seed=seed,
            scores={"de": 31.0 + shift, "es": 21.0 + shift},
        )  # fmt: skip
    _write_run(
        sweep_dir, runs, method="untrained", grid={}, k=0, seed=1, train_steps=0,
        scores={"de": 4.0, "es": 6.0},
    )  # fmt: skip
    (sweep_dir / "sweep.json").write_text(
        json.dumps({"task": "xquad", "runs": runs, "sweep": {"k": [0, 8]}})
    )
    for run in runs[:2]:  # logged curves of two runs, one line cut short by a crash
        rows = [
            {"loss": 5.0, "task_loss": 4.0, "align_loss": 2.0, "step": 2},
            {"held_out_distance_de": 0.2, "held_out_distance": 0.2, "step": 2},
            {"loss": 4.0, "task_loss": 3.5, "align_loss": 1.5, "step": 4},
        ]
        log = "".join(json.dumps(r) + "\n" for r in rows) + '{"loss": 3.'
        (sweep_dir / "runs" / run["name"] / "train_log.jsonl").write_text(log)
    return sweep_dir


def test_report_intervals_swept_key_comparisons_and_floor(lambda_sweep):
    report = write_report(lambda_sweep)
    rows = {(r["method"], r["k"], r["language"]): r for r in report["rows"]}
    # The untrained run is the floor, not a method.
    assert not any(m == "untrained" for m, _, _ in rows)
    assert report["references"] == [
        {"task": "xquad", "language": "de", "untrained": 4.0},
        {"task": "xquad", "language": "es", "untrained": 6.0},
    ]
    full_de = rows["full", 8, "de"]
    assert (full_de["mean"], full_de["std"]) == (41.0, 10.0)
    half = t_quantile(2) * 10.0 / math.sqrt(3)
    assert (full_de["ci95_low"], full_de["ci95_high"]) == pytest.approx((41 - half, 41 + half))

    # Score against lambda: one series (deep_prompt), both values, per language and average.
    swept = {(r["language"], r["value"]): r for r in report["swept"]}
    assert {r["key"] for r in report["swept"]} == {"align.weight"}
    assert {r["series"] for r in report["swept"]} == {"deep_prompt"}
    assert swept["de", 0]["mean"] == 40.0 and swept["de", 0.1]["mean"] == 44.0
    assert swept["avg", 0.1]["mean"] == pytest.approx(39.0)  # (44 + 34) / 2

    # Paired: lambda=0.1 - lambda=0 is +3, +4, +5 on the same seeds: beyond the seed spread
    # although each method's scores move by 20 points across seeds.
    pairs = {(r["a"], r["b"], r["language"]): r for r in report["comparisons"]}
    gain = pairs["deep_prompt align.weight=0", "deep_prompt align.weight=0.1", "de"]
    assert gain["mean_difference"] == pytest.approx(-4.0)
    assert gain["std_difference"] == pytest.approx(1.0)
    assert gain["larger_than_seed_spread"] is True
    versus_full = pairs["deep_prompt align.weight=0", "full", "avg"]  # -1 on every seed
    assert versus_full["mean_difference"] == pytest.approx(-1.0)
    assert versus_full["std_difference"] == pytest.approx(0.0)

    text = (lambda_sweep / "report" / "report.md").read_text()
    assert "### xquad: score vs align.weight" in text
    assert "| deep_prompt | 8 | de | 40.0 ± 10.0 | 44.0 ± 11.0 |" in text
    assert "### xquad: paired comparisons" in text
    assert "- de: untrained 4.0" in text
    curves = lambda_sweep / "report" / "xquad_training_curves.png"
    assert str(curves) in report["figures"] and curves.read_bytes()[:4] == b"\x89PNG"
    figure = lambda_sweep / "report" / "xquad_score_vs_align_weight.png"
    assert str(figure) in report["figures"] and figure.read_bytes()[:4] == b"\x89PNG"


def test_compare_picks_pairs_and_refuses_unknown_labels(lambda_sweep):
    report = write_report(lambda_sweep, compare=[("full", "deep_prompt align.weight=0.1")])
    assert {(r["a"], r["b"]) for r in report["comparisons"]} == {
        ("full", "deep_prompt align.weight=0.1")
    }
    with pytest.raises(LowresError, match="--compare names deep, which is not a method"):
        write_report(lambda_sweep, compare=[("full", "deep")])


def test_pawsx_report_draws_the_majority_class(tmp_path):
    sweep_dir = tmp_path / "p"
    runs: list[dict] = []
    for seed in (1, 2):
        _write_run(
            sweep_dir, runs, method="full", grid={}, k=0, seed=seed, task="pawsx",
            scores={"en": 55.0 + seed, "de": 52.0},
        )  # fmt: skip
    (sweep_dir / "sweep.json").write_text(json.dumps({"task": "pawsx", "runs": runs}))
    report = write_report(sweep_dir)
    refs = {r["language"]: r for r in report["references"]}
    assert refs["en"]["majority class"] == 58.0
    assert "- en: majority class 58.0" in (sweep_dir / "report" / "report.md").read_text()


def test_report_pools_sweeps_split_by_language_and_refuses_a_repeated_score(tmp_path):
    """One design run as two sweeps (de, then es): one report, paired over both languages."""
    halves = {}
    for lang, base in (("de", 30.0), ("es", 20.0)):
        sweep_dir = halves[lang] = tmp_path / f"sweep-{lang}"
        runs: list[dict] = []
        for seed in (1, 2, 3):
            for method, gain in (("full", 0.0), ("lora", 1.0 + seed)):  # lora: +2, +3, +4
                _write_run(
                    sweep_dir, runs, method=method, grid={}, k=8, seed=seed,
                    scores={lang: base + 10.0 * seed + gain},
                )  # fmt: skip
        (sweep_dir / "sweep.json").write_text(
            json.dumps({"task": "xquad", "runs": runs, "sweep": {"k": [8]}, "planned": 7})
        )
    out = tmp_path / "pooled"
    run_lowres("report", str(halves["de"]), str(halves["es"]), "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["sweep"] == [str(halves["de"]), str(halves["es"])]
    assert (report["planned"], report["finished"], report["partial"]) == (14, 12, True)
    rows = {(r["method"], r["language"]): r for r in report["rows"]}
    assert rows["full", "de"]["mean"] == 50.0 and rows["full", "es"]["mean"] == 40.0
    assert rows["full", "avg"]["mean"] == 45.0 and rows["full", "avg"]["seeds"] == [1, 2, 3]
    pairs = {(r["a"], r["b"], r["language"]): r for r in report["comparisons"]}
    assert pairs["full", "lora", "avg"]["mean_difference"] == pytest.approx(-3.0)
    assert pairs["full", "lora", "avg"]["larger_than_seed_spread"] is True
    assert (out / "xquad_score_vs_k.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(LowresError, match="needs --out DIR"):
        write_report([halves["de"], halves["es"]])
    with pytest.raises(LowresError, match="Two runs score full at k=8 in de with seed 1"):
        write_report([halves["de"], halves["de"]], tmp_path / "twice")


def test_a_method_missing_a_language_gets_no_average_and_no_average_pairing(tmp_path):
    """A pooled report while one method's last language is still running: its average over
    the other languages is neither shown nor paired with the complete methods' averages."""
    sweep_dir = tmp_path / "sweep"
    runs: list[dict] = []
    for seed in (1, 2, 3):
        _write_run(
            sweep_dir, runs, method="full", grid={}, k=8, seed=seed,
            scores={"de": 50.0 + seed, "zh": 40.0 + seed, "hi": 30.0 + seed},
        )  # fmt: skip
        _write_run(
            sweep_dir, runs, method="lora", grid={}, k=8, seed=seed,
            scores={"de": 52.0 + seed, "zh": 41.0 + seed},
        )  # fmt: skip
    (sweep_dir / "sweep.json").write_text(json.dumps({"task": "xquad", "runs": runs}))
    report = write_report(sweep_dir)
    averages = {r["method"]: r["mean"] for r in report["rows"] if r["language"] == "avg"}
    assert averages == {"full": pytest.approx(42.0)}  # (52 + 42 + 32) / 3; lora: none
    pairs = {(r["a"], r["b"], r["language"]): r for r in report["comparisons"]}
    assert set(pairs) == {("full", "lora", "de"), ("full", "lora", "zh")}
    assert pairs["full", "lora", "de"]["mean_difference"] == pytest.approx(-2.0)


def test_paired_p_value_matches_scipys_one_sample_t_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    for a, b in (
        ({1: 32.0, 2: 43.0, 3: 54.0}, {1: 30.0, 2: 40.0, 3: 50.0}),  # differences 2, 3, 4
        ({1: 35.0, 2: 38.0, 3: 51.0, 4: 20.0}, {1: 30.0, 2: 40.0, 3: 50.0, 4: 21.5}),
    ):
        differences = [a[s] - b[s] for s in sorted(a)]
        expected = scipy_stats.ttest_1samp(differences, 0.0).pvalue
        assert paired(a, b)["p"] == pytest.approx(expected, rel=1e-9)
    # by hand: differences 2, 3, 4 give t = 3 * sqrt(3) = 5.196 on 2 df, p = 0.0351
    assert paired({1: 2.0, 2: 3.0, 3: 4.0}, {1: 0.0, 2: 0.0, 3: 0.0})["p"] == pytest.approx(
        0.035098, abs=1e-6
    )


def test_holm_adjusts_by_hand_and_keeps_the_order_given():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_a_family_member_without_a_test_counts_as_p_one():
    # 0.01 among 3 (the untested as 1.0): x3 = 0.03, then 0.04 x2 = 0.08; alone they'd be 0.02
    assert holm_family([0.04, None, 0.01]) == pytest.approx([0.08, None, 0.03])
    assert holm_family([None, None]) == [None, None]
    assert holm_family([0.01, 0.04]) == pytest.approx(holm([0.01, 0.04]))  # all tested: Holm


def test_the_report_corrects_the_declared_family_and_labels_the_rest_exploratory(tmp_path):
    sweep_dir = tmp_path / "sweep"
    runs: list[dict] = []
    # prompt_align beats full by 2, 3, 4 at k=0 (both languages); lora is noise around full.
    for seed in (1, 2, 3):
        for method, gain in (("full", 0.0), ("prompt_align", 1.0 + seed), ("lora", 3 - seed)):
            _write_run(
                sweep_dir, runs, method=method, grid={}, k=0, seed=seed,
                scores={"de": 30.0 + 5 * seed + gain, "es": 20.0 + gain},
            )  # fmt: skip
    (sweep_dir / "sweep.json").write_text(json.dumps({"task": "xquad", "runs": runs}))
    primary = [("full", "prompt_align", 0, "avg"), ("full", "lora", 0, "avg"), ("a", "b", 0, "de")]
    report = write_report(sweep_dir, primary=primary)
    rows = {(r["a"], r["b"], r["language"]): r for r in report["comparisons"]}
    first, second = rows["full", "prompt_align", "avg"], rows["full", "lora", "avg"]
    assert first["family"] == second["family"] == "primary"
    # the declared comparison without a test stays in the family, as p = 1
    assert report["family"]["size"] == 3 and report["family"]["without_a_test"] == [
        ["a", "b", 0, "de"]
    ]
    assert [first["p_holm"], second["p_holm"]] == pytest.approx(
        holm([first["p"], second["p"], 1.0])[:2]
    )
    assert first["p"] == pytest.approx(0.035098, abs=1e-6)  # differences -2, -3, -4
    assert (
        first["p_holm"] == pytest.approx(3 * 0.035098, abs=1e-5) and first["holm_rejects"] is False
    )
    assert rows["full", "prompt_align", "de"]["family"] == "exploratory"
    assert rows["full", "prompt_align", "de"]["p_holm"] is None
    text = (sweep_dir / "report" / "report.md").read_text()
    assert "the 3 pre-registered comparisons, corrected together by Holm" in text
    assert "the 1 declared without a test count as p = 1" in text
    assert "| primary | full | prompt_align | 0 | avg | 3 |" in text
    assert "no (Holm)" in text and "| exploratory | full | prompt_align | 0 | de |" in text
    assert "the intervals vary seeds (each seed: its own k-shot sample" in text


def _set_average_f1(text):
    data = json.loads(text)
    data["average"]["f1"] = "high"
    return json.dumps(data)


def _drop_average(text):
    data = json.loads(text)
    del data["average"]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda text: text[: len(text) // 2], "probably truncated"),
        (lambda text: "\x00\x01garbage" + text, "is not valid JSON"),
        (_set_average_f1, "'average' is {'f1': 'high'}"),
        (_drop_average, "has no 'average'"),
        (lambda text: "[]", "holds a JSON list"),
    ],
)
def test_report_names_a_damaged_metrics_file(lambda_sweep, capsys, damage, needle):
    metrics = sorted(lambda_sweep.glob("runs/full/**/metrics.json"))[0]
    metrics.write_text(damage(metrics.read_text()))
    with pytest.raises(SystemExit) as exit_info:
        run_lowres("report", str(lambda_sweep))
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2
    assert str(metrics) in err
    assert needle in err and "Traceback" not in err
