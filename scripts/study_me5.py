"""The me5-small study (v1) rebuilt from its committed results: tables, plots, pooled reports.

    python scripts/study_me5.py report [--data-root DIR]   # from results/study_me5/runs/

The study ran step by step (one ``lowres train``, ``evaluate`` or ``sweep`` command each) and
every finished step's results (metrics, gzipped predictions, training logs, overrides; never
weights) are committed in ``results/study_me5/runs/<step>/``; each step's command is in its
``overrides.yaml`` (a sweep's in its ``sweep.json``). Its verdicts, and where study v2
supersedes them: docs/results/study_me5.md. New studies are specs run by ``lowres study
run|status|report SPEC`` (lowres/sweeps/study.py, docs/study.md); this script only remakes
what v1's page shows from what git holds, without training. With the benchmark data
(``--data-root``, default ``$LOWRES_DATA`` or ``../shared/data``) it also writes
``question_bootstrap.md``: the zero-shot differences with 95 % intervals over the test
questions, from the committed predictions scored again.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402

from lowres.errors import LowresError  # noqa: E402
from lowres.sweeps.plots import REFERENCE_STYLE  # noqa: E402
from lowres.sweeps.report import write_report  # noqa: E402
from lowres.sweeps.stats import BOOTSTRAP_RESAMPLES, bootstrap_mean, paired_bootstrap  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path("results/study_me5")

XQUAD = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
MLQA = ["en", "de", "es", "ar", "hi", "vi", "zh"]
PAWSX = ["en", "de", "es", "fr", "ja", "ko", "zh"]
FEW_SHOT_LANGUAGES = ["de", "zh", "hi"]  # three scripts: Latin, Han, Devanagari
MAIN_METHODS = ["full", "lora", "bitfit", "deep_prompt", "prompt_align"]
ALIGN_WEIGHTS = [0, 0.05, 0.2, 1.0]  # (b): lambda, one step per value
ALIGN_KINDS = ["mse", "cosine"]  # (b): beside the preset's contrastive loss
# How the tables name the rows whose step name alone would mislead. The *_all_linear runs
# adapt every linear layer of the blocks (the preset as it is now; choice.md, "Tuning").
LABELS = {
    "prompt_align": "prompt_align, first preset (LoRA on query, value)",
    "prompt_align_all_linear": "prompt_align (LoRA on every linear layer)",
    "lora_all_linear": "lora on every linear layer",
}
TUNED = {"lora_all_linear": "lora", "prompt_align_all_linear": "prompt_align"}
# The stage-2 protocol check: full fine-tuning against the paper's method in its preset now,
# each from its own source run; three candidates, English k-shot runs only.
STAGE2_METHODS = ["full", "prompt_align"]
STAGE2_CANDIDATES = ["steps40", "epochs2", "epochs8"]
# The candidate the rule chose (results/study_me5/stage2_en_report/choice.md).
STAGE2_CHOSEN = "epochs2"


def stage2_steps() -> list[str]:
    """The stage-2 steps, in the order they ran (the order the pooled reports list them)."""
    names = [f"stage2-en-{candidate}" for candidate in STAGE2_CANDIDATES]
    # The chosen protocol in the target languages: k = 8 and 32, then k = 128 in steps of its
    # own; (c)'s LoRA on query and value in steps of its own too.
    for k_suffix in ("", "-k128"):
        for suffix in ("", "-lora"):
            names += [
                f"stage2-{lang}-{STAGE2_CHOSEN}{suffix}{k_suffix}" for lang in FEW_SHOT_LANGUAGES
            ]
    names += [f"stage2-{lang}-{STAGE2_CHOSEN}-lora_all_linear" for lang in FEW_SHOT_LANGUAGES]
    # (e) under the chosen protocol: each method taught by its own source run.
    for method in STAGE2_METHODS:
        names += [f"stage2-pseudo-{lang}-{STAGE2_CHOSEN}-{method}" for lang in FEW_SHOT_LANGUAGES]
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    report = sub.add_parser("report", help="the tables and plots of results/study_me5/")
    report.add_argument(
        "--data-root",
        default=os.environ.get("LOWRES_DATA", "../shared/data"),
        help="the benchmark data, for the intervals over test questions",
    )
    args = parser.parse_args(argv)
    data_root = Path(args.data_root).resolve()
    os.chdir(REPO)
    cmd_report()
    if (data_root / "xquad").is_dir() and (data_root / "mlqa").is_dir():
        out = RESULTS / "question_bootstrap.md"
        out.write_text(question_bootstrap(data_root))
        print(f"study: zero-shot differences over test questions in {out}")
    else:
        print(f"study: no XQuAD and MLQA under {data_root}: question_bootstrap.md not rebuilt")


# -- zero-shot intervals over the test questions ----------------------------------------------
# Each comparison of the page's verdict on (a): the two presets of the paper's method and plain
# LoRA on the same layers, against full fine-tuning and against each other.
ZERO_SHOT_PAIRS = [
    ("prompt_align_all_linear", "full"),
    ("lora_all_linear", "full"),
    ("prompt_align_all_linear", "lora_all_linear"),
    ("prompt_align", "full"),
    ("prompt_align", "lora"),
]


def _scorer(task: str, data_root: Path):
    """Each question's F1 under ``task``'s official metric, against ``data_root``."""
    from hydra import compose, initialize_config_dir

    from lowres.recipes.rescore import question_scorer
    from lowres.schema import config_dir, register_schemas

    register_schemas()
    overrides = [f"+task={task}", "backbone=me5-small", "data=local", f"data.root={data_root}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return question_scorer(compose(config_name="train", overrides=overrides))


def question_scores(task: str, method: str, languages: list[str], score) -> dict[str, dict]:
    """Language -> question -> F1 of a committed zero-shot run, scored again from its
    predictions; each language's mean and count must be the committed ones."""
    run = RESULTS / "runs" / f"{task}-{method}"
    committed = json.loads((run / "metrics.json").read_text())["per_language"]
    out = {}
    for lang in languages:
        with gzip.open(run / "predictions" / f"{lang}.json.gz", "rt", encoding="utf-8") as f:
            scores = score(lang, json.load(f))
        mean, kept = statistics.fmean(scores.values()), committed[lang]
        if len(scores) != kept["n"] or abs(mean - kept["f1"]) > 1e-6:
            raise LowresError(
                f"{run}: {lang} scores {mean:.4f} F1 over {len(scores)} questions against "
                f"this data, but {kept['f1']:.4f} over {kept['n']} was committed; give "
                "--data-root the data the study was scored on."
            )
        out[lang] = scores
    return out


def question_bootstrap(data_root: Path) -> str:
    """The zero-shot table of (a) and its differences, each with the 95 % interval of a
    paired bootstrap over the test questions (languages drawn apart, weighed equally)."""
    lines = [
        "Zero-shot F1 averaged over the target languages (all but English), with 95 % intervals",
        "over the **test questions**: a bootstrap of "
        f"{BOOTSTRAP_RESAMPLES:,} resamples (seed 0) of each",
        "language's questions, drawn apart, the languages weighed equally; a difference is",
        "paired by question. Each question's F1 is scored again from the committed predictions",
        "(`runs/<task>-<method>/predictions/`) with the official metric; each language's mean is",
        "the committed score. One source model per method (seed 42): these intervals vary the",
        "questions, not the training seed, which this study did not vary.",
        "",
    ]
    for task, languages in (("xquad", XQUAD), ("mlqa", MLQA)):
        targets = [lang for lang in languages if lang != "en"]
        score = _scorer(task, data_root)
        methods = sorted({m for pair in ZERO_SHOT_PAIRS for m in pair})
        scores = {m: question_scores(task, m, targets, score) for m in methods}
        questions = sum(len(scores["full"][lang]) for lang in targets)
        lines += [
            f"### {task}: {len(targets)} target languages, {questions:,} questions",
            "",
            "| method or difference | F1 | 95 % interval over questions |",
            "|---|---:|---:|",
        ]
        for method in methods:
            row = bootstrap_mean([list(scores[method][lang].values()) for lang in targets])
            lines.append(
                f"| {LABELS.get(method, method)} | {row['mean']:.2f} | "
                f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] |"
            )
        for a, b in ZERO_SHOT_PAIRS:
            row = paired_bootstrap(scores[a], scores[b])
            lines.append(
                f"| {LABELS.get(a, a)} − {LABELS.get(b, b)} | {row['mean']:+.2f} | "
                f"[{row['ci95_low']:+.2f}, {row['ci95_high']:+.2f}] |"
            )
        lines.append("")
    return "\n".join(lines)


# -- report ----------------------------------------------------------------------------------
def _metrics(name: str) -> dict | None:
    path = RESULTS / "runs" / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(scores: dict, key: str) -> str:
    if key == "f1":
        return f"{scores['f1']:.1f} / {scores['exact_match']:.1f}"
    return f"{scores[key]:.1f}"


def main_table(task: str, languages: list[str], key: str) -> tuple[str, dict[str, dict]]:
    """One row per method: trainable share, train time, each language, the non-English mean."""
    head = ["method", "trainable (%)", "train time (s)", "questions", *languages, "avg without en"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|---|---:|---:|---:|" + "---:|" * (len(languages) + 1),
    ]
    found: dict[str, dict] = {}
    methods = ["untrained", *MAIN_METHODS] + ([] if task == "pawsx" else list(TUNED))
    for method in methods:
        scored = _metrics(f"{task}-{method}")
        trained = (
            scored if task == "pawsx" or method == "untrained" else _metrics(f"train-{method}")
        )
        # PAWS-X trains its own runs, with the presets as they are now.
        label = method if task == "pawsx" else LABELS.get(method, method)
        if scored is None or trained is None:
            lines.append(f"| {label} | (not run yet) |" + " |" * (len(languages) + 3))
            continue
        found[label] = scored
        per = scored["per_language"]
        share = 100 * trained["trainable_parameters"] / trained["total_parameters"]
        targets = [per[lang][key] for lang in languages if lang != "en"]
        cells = [
            label,
            "0" if method == "untrained" else f"{share:.2f}",
            f"{trained['train_runtime_s']:.0f}",
            # Scored examples per language: rows are comparable only where this is the same.
            "/".join(sorted({str(per[lang]["n"]) for lang in languages})),
            *(_cell(per[lang], key) for lang in languages),
            f"{sum(targets) / len(targets):.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", found


def _majority(found: dict[str, dict], languages: list[str]) -> list[float] | None:
    """Each language's share of its larger class (the score of always predicting it), where
    the metrics hold one: the same scored rows for every method, so any run gives it."""
    for metrics in found.values():
        per = metrics["per_language"]
        if all("majority_class" in per[lang] for lang in languages):
            return [per[lang]["majority_class"] for lang in languages]
    return None


def plot_main(
    found: dict[str, dict],
    languages: list[str],
    key: str,
    title: str,
    out: Path,
    majority: list[float] | None,
) -> None:
    """Score per language, one marker series per method; the untrained floor and (PAWS-X) the
    majority class as reference marks."""
    figure, axis = plt.subplots(figsize=(9, 4))
    positions = range(len(languages))
    if majority:
        colour = REFERENCE_STYLE["majority class"][0]
        axis.plot(positions, majority, "_", color=colour, markersize=18, label="majority class")
    for offset, (method, metrics) in enumerate(found.items()):
        values = [metrics["per_language"][lang][key] for lang in languages]
        if method == "untrained":
            axis.plot(
                positions, values, "_", color="grey", markersize=18, label="untrained (floor)"
            )
            continue
        # Languages are categories: markers, no lines between them; a small shift per method
        # keeps equal scores visible side by side.
        shift = (offset - len(found) / 2) * 0.08
        axis.plot([p + shift for p in positions], values, "o", label=method)
    axis.set_xticks(list(positions), languages)
    axis.set_ylim(0, 100)
    axis.set_ylabel(key.replace("_", " "))
    axis.set_title(title + " (one seed per method)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, ncol=3)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def stage2_label(method: str, candidate: str, pseudo: bool = False, layers: str = "") -> str:
    """A stage-2 candidate's row label in the pooled reports (its one-point grid, if any,
    with ``layers`` as a second grid key), with self-training if ``pseudo``."""
    grid = (
        f" trainer.epochs={candidate.removeprefix('epochs')}"
        if candidate.startswith("epochs")
        else ""
    )
    if layers:
        grid += f",adapter.layers={layers}"
    return f"{method}{grid} (two-stage)" + (" +pseudo:self_train" if pseudo else "")


def stage2_choice(pooled: Path, out: Path) -> str | None:
    """The stage-2 protocol by the rule fixed before its candidates ran: the best English F1
    averaged over both methods, k = 8 and 32 and the 3 seeds. Read from the candidates'
    pooled report (``pooled``: its report.json), written to ``out``; None until every
    candidate has all its runs."""
    if not pooled.is_file():
        return None
    means = {
        (row["method"], row["k"]): row["mean"]
        for row in json.loads(pooled.read_text())["rows"]
        if row["language"] == "en" and len(row["seeds"]) == 3
    }
    rows = []
    for name in STAGE2_CANDIDATES:
        cells = [(stage2_label(m, name), k) for m in STAGE2_METHODS for k in (8, 32)]
        if any(cell not in means for cell in cells):
            return None
        values = [means[cell] for cell in cells]
        rows.append((name, values, sum(values) / len(values)))
    best = max(rows, key=lambda row: row[2])[0]
    header = " | ".join(f"{m} k = {k}" for m in STAGE2_METHODS for k in (8, 32))
    lines = [
        "English F1 (mean of 3 seeds) of each stage-2 candidate, k questions from English",
        "XQuAD's held-out target pool, scored on its first 300 evaluated questions. The rule,",
        "fixed before they ran: the best average over both methods and k = 8, 32 wins.",
        "",
        f"| candidate | {header} | average |",
        "|---|" + "---:|" * (len(STAGE2_METHODS) * 2 + 1),
    ]
    for name, values, average in rows:
        mark = "**" if name == best else ""
        cells = " | ".join(f"{value:.1f}" for value in values)
        lines.append(f"| {mark}{name}{mark} | {cells} | {mark}{average:.1f}{mark} |")
    lines += ["", f"Chosen: **{best}**."]
    out.write_text("\n".join(lines) + "\n")
    return best


def cmd_report() -> None:
    sections = []
    for task, languages, key, title in (
        ("xquad", XQUAD, "f1", "XQuAD zero-shot, F1 / EM"),
        ("mlqa", MLQA, "f1", "MLQA XLT zero-shot, F1 / EM"),
        ("pawsx", PAWSX, "accuracy", "PAWS-X zero-shot, accuracy"),
    ):
        table, found = main_table(task, languages, key)
        majority = _majority(found, languages)
        if majority:
            cells = ", ".join(
                f"{lang} {value:.1f}" for lang, value in zip(languages, majority, strict=True)
            )
            table += f"\nMajority class (always predicting the larger class): {cells}.\n"
        sections.append(f"### {title}\n\n{table}")
        if len(found) > 1:
            figure = RESULTS / f"main_{task}.png"
            plot_main(found, languages, key, title.split(",")[0], figure, majority)
            sections.append(f"![{title}]({figure.name})\n")
    (RESULTS / "main_tables.md").write_text("\n".join(sections))
    # (b), (c) and (e) run one grid value or language per step; one report per part pools its
    # steps. (e) is read beside (c): the same prompt_align runs (same seeds, same k-shot
    # samples) without self-training.
    weights = [f"align-weight-{w}" for w in ALIGN_WEIGHTS]
    kinds = ["align-weight-0.2", *(f"align-kind-{kind}" for kind in ALIGN_KINDS)]
    suffixes = ("", "-all_linear")  # the first preset's steps, the preset now's
    fewshot = [f"fewshot-{lang}{suffix}" for suffix in suffixes for lang in FEW_SHOT_LANGUAGES]
    pseudo = [f"pseudo-{lang}{suffix}" for suffix in suffixes for lang in FEW_SHOT_LANGUAGES]
    # Each preset's runs with self-training against the same runs without, once both ran.
    with_and_without = [
        (f"{method} (two-stage) +pseudo:self_train", f"{method} (two-stage)")
        for method, suffix in (
            ("prompt_align", ""),
            ("prompt_align adapter.layers=all_linear", "-all_linear"),
        )
        if any(
            (RESULTS / "runs" / f"pseudo-{lang}{suffix}").is_dir() for lang in FEW_SHOT_LANGUAGES
        )
    ]

    # Each stage-2 protocol's paper's-method rows against full fine-tuning's (and, under the
    # chosen one, against LoRA's once those steps ran).
    candidates = STAGE2_CANDIDATES
    stage2 = stage2_steps()
    english = [name for name in stage2 if name.startswith("stage2-en-")]
    targets = [name for name in stage2 if not name.startswith(("stage2-en-", "stage2-pseudo-"))]
    paper = "prompt_align"
    # (e) under the chosen protocol: each method with self-training against the same runs
    # without (same seeds, same k-shot samples), and the two methods with it against each
    # other, once their steps ran.
    untaught = [f"stage2-{lang}-{STAGE2_CHOSEN}" for lang in FEW_SHOT_LANGUAGES]
    taught = {
        method: [
            name
            for name in stage2
            if name.startswith("stage2-pseudo-") and name.endswith(f"-{method}")
        ]
        for method in STAGE2_METHODS
    }
    ran = [m for m in STAGE2_METHODS if any((RESULTS / "runs" / n).is_dir() for n in taught[m])]
    taught_pairs = [
        (stage2_label(m, STAGE2_CHOSEN, pseudo=True), stage2_label(m, STAGE2_CHOSEN)) for m in ran
    ]
    if len(ran) == len(STAGE2_METHODS):
        taught_pairs.append(
            (
                stage2_label(paper, STAGE2_CHOSEN, pseudo=True),
                stage2_label("full", STAGE2_CHOSEN, pseudo=True),
            )
        )
    english_pairs = [(stage2_label(paper, c), stage2_label("full", c)) for c in candidates]
    baselines = [stage2_label("full", STAGE2_CHOSEN)]
    for suffix, layers in (("-lora", ""), ("-lora_all_linear", "all_linear")):
        if any((RESULTS / "runs" / name).is_dir() for name in targets if name.endswith(suffix)):
            baselines.append(stage2_label("lora", STAGE2_CHOSEN, layers=layers))
    chosen_pairs = [(stage2_label(paper, STAGE2_CHOSEN), b) for b in baselines]
    all_linear = stage2_label("lora", STAGE2_CHOSEN, layers="all_linear")
    if all_linear in baselines:  # plain LoRA with the preset's layers against full, too
        chosen_pairs.append((all_linear, baselines[0]))
    pools = (
        ("stage2_en", english, english_pairs),
        ("stage2", targets, chosen_pairs),
        ("stage2_pseudo", [*untaught, *(n for m in ran for n in taught[m])], taught_pairs),
        ("align_weight", weights, None),
        ("align_kind", kinds, None),
        ("fewshot", fewshot, None),
        ("pseudo", [*fewshot, *pseudo], with_and_without),
    )
    for name, names, compare in pools:
        folders = [
            RESULTS / "runs" / n for n in names if (RESULTS / "runs" / n / "sweep.json").is_file()
        ]
        if not any(folder.name.startswith(name.replace("_", "-")) for folder in folders):
            continue  # none of this part's own steps has run yet
        try:
            write_report(folders, RESULTS / f"{name}_report", compare)
        except LowresError as err:
            print(f"{name}: {err}")
    report = RESULTS / "stage2_en_report"
    chosen = stage2_choice(report / "report.json", report / "choice.md")
    if chosen:
        print(f"study: stage-2 protocol on English: {chosen} (stage2_en_report/choice.md)")
    pooled = ", ".join(f"{name}_report/" for name, _, _ in pools)
    print(
        f"study: tables in {RESULTS / 'main_tables.md'}; "
        f"(b), (c) and (e) pooled in {RESULTS}/: {pooled}"
    )


if __name__ == "__main__":
    main()
