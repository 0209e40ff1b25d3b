"""The me5-small study of the paper's method (results/study_me5/), resumable from what git holds.

    python scripts/study_me5.py status                 # every step: committed, or still to run
    python scripts/study_me5.py run [STEP ...] [--commit] [--have STEP=RUN_DIR ...]
    python scripts/study_me5.py keep STEP ... [--commit]  # a sweep step's finished runs so far
    python scripts/study_me5.py report                 # tables and plots from results/study_me5/

Each step is one ``lowres train``, ``lowres evaluate`` or ``lowres sweep`` command (``status
--commands`` prints them). A step runs in ``outputs/study_me5/<step>/``; when it finishes, its
results (metrics, gzipped predictions, training log, overrides; never the weights) are copied to
``results/study_me5/runs/<step>/`` and, with ``--commit``, committed. A step whose copy is in
git counts as done, so a new machine with a fresh clone carries on where the last one stopped.
A step that needs another one's trained weights (``lowres evaluate checkpoint=``, the k-shot
sweeps' ``sweep.stage1_from``) finds them in ``outputs/study_me5/``; when that folder is gone
(a new machine) the training step is run again there first: same command, same seed.
``--have STEP=RUN_DIR`` adopts a finished run made elsewhere with that step's command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
from runs_table import compress_predictions, keep  # noqa: E402  (scripts/ is on sys.path when a script runs)

from lowres.errors import LowresError  # noqa: E402
from lowres.sweeps.plots import REFERENCE_STYLE  # noqa: E402
from lowres.sweeps.report import write_report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path("results/study_me5")
WORK = Path("outputs/study_me5")
# What a run folder holds that git should not: trained weights, Trainer checkpoints, locks.
NOT_KEPT = ("checkpoint", "trainer", "teacher", ".lowres.lock", "*.safetensors", "*.bin")

XQUAD = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
MLQA = ["en", "de", "es", "ar", "hi", "vi", "zh"]
PAWSX = ["en", "de", "es", "fr", "ja", "ko", "zh"]
TARGETS = [lang for lang in XQUAD if lang != "en"]
FEW_SHOT_LANGUAGES = ["de", "zh", "hi"]  # three scripts: Latin, Han, Devanagari
MAIN_METHODS = ["full", "lora", "bitfit", "deep_prompt", "prompt_align"]
ALIGN_WEIGHTS = [0, 0.05, 0.2, 1.0]  # (b): lambda, the values
ALIGN_KINDS = ["mse", "cosine"]  # (b): beside the preset's contrastive loss
# The winner of the tuning steps on source dev (choice.md, "Tuning"): LoRA on every linear
# layer of the blocks, now prompt_align's preset (adapter.layers=all_linear). Its source runs
# are rows of their own, for the paper's method and for plain LoRA with the same targets.
ALL_LINEAR = "adapter.target_modules=[query,key,value,dense]"
# The steps run before that change pin the preset's first LoRA (query and value), so that
# their commands still make what results/ holds.
FIRST_PRESET = "adapter.layers=attention"
# How the tables name the rows whose step name alone would mislead.
LABELS = {
    "prompt_align": "prompt_align, first preset (LoRA on query, value)",
    "prompt_align_all_linear": "prompt_align (LoRA on every linear layer)",
    "lora_all_linear": "lora on every linear layer",
}
TUNED = {"lora_all_linear": "lora", "prompt_align_all_linear": "prompt_align"}
# The stage-2 protocol check: full fine-tuning against the paper's method in its preset now,
# each from its own source run. Epoch-counted candidates keep the last checkpoint, as the
# 40-step one does (a step-capped run has no candidates to choose from).
STAGE2_RUNS = ["full", "prompt_align_all_linear"]
STAGE2_METHODS = ["full", "prompt_align"]
STAGE2_SOURCES = ",".join(
    f"{m}:'<train-{run}>'" for m, run in zip(STAGE2_METHODS, STAGE2_RUNS, strict=True)
)
STAGE2_EPOCHS = (2, 8)  # passes over the k examples: 2-4 and 8-16 steps at k = 8
# The candidate the rule chose (results/study_me5/stage2_en_report/choice.md).
STAGE2_CHOSEN = "epochs2"
STAGE2_CANDIDATES = [  # (name, k values, sweep arguments); k = 0 once, with the first
    ("steps40", [0, 8, 32], ["sweep.stage2=['trainer.max_steps=40']"]),
    *(
        (
            f"epochs{epochs}",
            [8, 32],
            [
                "sweep.stage2=['trainer.max_steps=-1','trainer.select_on=last']",
                f"sweep.grid={{trainer.epochs:[{epochs}]}}",
            ],
        )
        for epochs in STAGE2_EPOCHS
    ),
]


def _list(values) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def shared(data_root: str) -> list[str]:
    """Every step's backbone and data; the rest of each command is the step's own."""
    return ["backbone=me5-small", "data=local", f"data.root={data_root}", "trainer.progress=false"]


# The XQuAD-pool steps: max length 256, and 20 % of each target language held out as the
# target pool (alignment pairs, k-shot samples), so every XQuAD score below is over the same
# other 80 % of the questions.
XQUAD_RUN = ["+task=xquad", "task.max_length=256", "data.pool_fraction=0.2"]


@dataclass
class Step:
    name: str
    verb: str  # train | evaluate | sweep
    args: list[str]
    needs: list[str] = field(default_factory=list)  # steps whose trained weights {name} names
    block: str = ""  # the study part: choice, a, b, c, e

    def command(self, data_root: str, where: dict[str, str]) -> list[str]:
        """The lowres command line; ``where`` gives each needed step's run folder."""
        args = list(self.args)
        for need, run_dir in where.items():
            args = [a.replace(f"<{need}>", run_dir) for a in args]
        # lowres evaluate takes the backbone and data from the checkpoint's saved config;
        # only the data folder may differ on this machine.
        common = [f"data.root={data_root}"] if self.verb == "evaluate" else shared(data_root)
        return [self.verb, *args, *common]


def steps() -> list[Step]:
    xquad = [*XQUAD_RUN, "trainer.epochs=1"]
    align_targets = f"align.target_languages={_list(TARGETS)}"
    out: list[Step] = []
    # How the paper's method was chosen, on source-language dev only:
    # docs/results/study_me5_choice.md.
    choice = [
        *xquad,
        "+method=prompt_align",
        "data.eval_languages=[en]",
        align_targets,
        "trainer.max_steps=300",
        "trainer.select_every=150",
    ]
    # The two kinds of lightweight fine-tuning the issue names: LoRA (the preset's first one)
    # and the top 3 layers trained at the full fine-tuning rate, instead of LoRA.
    upper3 = ["adapter=none", "freeze=lower_k", "freeze.k=-3", "trainer.lr=1e-4"]
    out += [
        Step("choice-upper3", "train", [*choice, *upper3], block="choice"),
        Step("choice-lora", "train", [*choice, FIRST_PRESET], block="choice"),
    ]
    # Tuning the chosen preset, the same way (source dev, 300 steps): LoRA on every linear
    # layer of the blocks (attention and feed-forward), and a larger rank on query and value.
    out += [
        Step(
            "tune-lora_all_linear",
            "train",
            [*choice, ALL_LINEAR],
            block="choice",
        ),
        Step(
            "tune-lora_r32",
            "train",
            [*choice, FIRST_PRESET, "adapter.r=32", "adapter.alpha=64"],
            block="choice",
        ),
    ]
    # (a) one source-trained run per method (one epoch of the English pool), each evaluated
    # on XQuAD's 11 languages and on MLQA's 7 from its checkpoint; PAWS-X trains its own.
    for method in [*MAIN_METHODS, *TUNED]:
        preset = TUNED.get(method, method)
        extra = [align_targets] if preset == "prompt_align" else []
        if method in TUNED:
            extra.append(ALL_LINEAR)
        elif method == "prompt_align":
            extra.append(FIRST_PRESET)
        out.append(
            Step(
                f"train-{method}",
                "train",
                [*xquad, f"+method={preset}", "data.eval_languages=[en]", *extra],
                block="a",
            )
        )
    out.append(
        Step(
            "xquad-untrained",
            "train",
            [*XQUAD_RUN, "+method=untrained", f"data.eval_languages={_list(XQUAD)}"],
            block="a",
        )
    )
    out.append(
        Step(
            "mlqa-untrained",
            "train",
            [
                "+task=mlqa",
                "task.max_length=256",
                "+method=untrained",
                f"data.eval_languages={_list(MLQA)}",
            ],
            block="a",
        )
    )
    for method in [*MAIN_METHODS, *TUNED]:
        out.append(
            Step(
                f"xquad-{method}",
                "evaluate",
                # The pool share again: a checkpoint made without it would score all questions.
                [
                    f"checkpoint=<train-{method}>",
                    f"data.eval_languages={_list(XQUAD)}",
                    "data.pool_fraction=0.2",
                ],
                needs=[f"train-{method}"],
                block="a",
            )
        )
        out.append(
            Step(
                f"mlqa-{method}",
                "evaluate",
                [f"checkpoint=<train-{method}>", "task=mlqa", f"data.eval_languages={_list(MLQA)}"],
                needs=[f"train-{method}"],
                block="a",
            )
        )
    # PAWS-X has no English training file here: the English rows of the target pool are the
    # source pool, so half of each language is held out (1000 training pairs, 1000 scored).
    pawsx = [
        "+task=pawsx",
        "task.max_length=128",
        "data.pool_fraction=0.5",
        f"data.eval_languages={_list(PAWSX)}",
    ]
    for method in ["untrained", *MAIN_METHODS]:
        # 10 epochs: with 2, full fine-tuning and prompt_align both predicted the majority class
        # everywhere (results/study_me5/pawsx_2epochs/). untrained keeps its 0 epochs.
        extra = [] if method == "untrained" else ["trainer.epochs=10"]
        if method == "prompt_align":
            extra.append(f"align.target_languages={_list(PAWSX[1:])}")
        out.append(
            Step(f"pawsx-{method}", "train", [*pawsx, f"+method={method}", *extra], block="a")
        )
    # Sweeps score a fixed recorded subset: each language's first 300 evaluated questions.
    sweep_common = [
        *XQUAD_RUN,
        "data.max_eval_examples=300",
        "sweep.seeds=[1,2,3]",
    ]
    every_target = f"sweep.languages={_list(FEW_SHOT_LANGUAGES)}"
    # (b) how much alignment, and which kind: 200 source steps, pairs only from the target pool.
    # One step per grid value (about 35 min each here), so each lands in git on its own; the
    # report pools them into one sweep over the value. The contrastive point of the kind
    # ablation is the align-weight-0.2 step.
    ablation = [
        *sweep_common,
        every_target,
        "sweep.k=[0]",
        "sweep.methods=[prompt_align]",
        "trainer.max_steps=200",
    ]
    # λ is in the kind steps' grid too, so their rows' labels give it beside the kind.
    grids = [(f"align-weight-{w}", f"{{align.weight:[{w}]}}") for w in ALIGN_WEIGHTS] + [
        (f"align-kind-{kind}", f"{{align:[{kind}],align.weight:[0.2]}}") for kind in ALIGN_KINDS
    ]
    for name, grid in grids:
        out.append(Step(name, "sweep", [*ablation, f"sweep.grid={grid}"], block="b"))
    # (c) the few-shot curve, two-stage from the (a) runs; (e) the same with self-training.
    # One step per target language: each is a complete paired comparison (every method, k and
    # seed on the same samples) that lands in git on its own (about 45 min each here).
    fewshot_methods = ["full", "lora", "prompt_align"]
    stage1 = ",".join(f"{m}:'<train-{m}>'" for m in fewshot_methods)
    stage2 = [
        "sweep.schedules=[two_stage]",
        "sweep.stage2=['trainer.max_steps=40']",
        FIRST_PRESET,  # the stage-1 runs of prompt_align and lora adapt query and value
    ]
    for lang in FEW_SHOT_LANGUAGES:
        out.append(
            Step(
                f"fewshot-{lang}",
                "sweep",
                [
                    *sweep_common,
                    f"sweep.languages=[{lang}]",
                    "sweep.k=[0,8,32,128]",
                    f"sweep.methods={_list(fewshot_methods)}",
                    *stage2,
                    f"sweep.stage1_from={{{stage1}}}",
                ],
                needs=[f"train-{m}" for m in fewshot_methods],
                block="c",
            )
        )
    for lang in FEW_SHOT_LANGUAGES:
        out.append(
            Step(
                f"pseudo-{lang}",
                "sweep",
                [
                    *sweep_common,
                    f"sweep.languages=[{lang}]",
                    "sweep.k=[8,32]",
                    "sweep.methods=[prompt_align]",
                    *stage2,
                    "sweep.stage1_from={prompt_align:'<train-prompt_align>'}",
                    "pseudo=self_train",
                    "pseudo.teacher=<train-prompt_align>",
                ],
                needs=["train-prompt_align"],
                block="e",
            )
        )
    # (c) and (e) again for the preset as it is now (LoRA on every linear layer), under the
    # same stage-2 protocol, so its rows sit beside the committed full and LoRA runs (same
    # seeds, same k-shot samples). The one-point grid labels its rows apart from the first
    # preset's "prompt_align" ones.
    now = [
        "sweep.methods=[prompt_align]",
        "sweep.schedules=[two_stage]",
        "sweep.stage2=['trainer.max_steps=40']",
        "sweep.grid={adapter.layers:[all_linear]}",
        "sweep.stage1_from={prompt_align:'<train-prompt_align_all_linear>'}",
    ]
    for lang in FEW_SHOT_LANGUAGES:
        out.append(
            Step(
                f"fewshot-{lang}-all_linear",
                "sweep",
                [*sweep_common, f"sweep.languages=[{lang}]", "sweep.k=[0,8,32,128]", *now],
                needs=["train-prompt_align_all_linear"],
                block="c",
            )
        )
    for lang in FEW_SHOT_LANGUAGES:
        out.append(
            Step(
                f"pseudo-{lang}-all_linear",
                "sweep",
                [
                    *sweep_common,
                    f"sweep.languages=[{lang}]",
                    "sweep.k=[8,32]",
                    *now,
                    "pseudo=self_train",
                    "pseudo.teacher=<train-prompt_align_all_linear>",
                ],
                needs=["train-prompt_align_all_linear"],
                block="e",
            )
        )
    # A stage-2 protocol chosen on English only. 40 steps over k = 8 examples is 20 passes,
    # and every method lost 5-8 F1 against its own k = 0 model in (c). The candidates run with
    # English as the k-shot language: k questions from English XQuAD's held-out target pool
    # (never in the source pool), scored on its first 300 evaluated questions. The rule, fixed
    # before any of these ran: the candidate with the best English F1 averaged over both
    # methods, k = 8 and 32 and the 3 seeds becomes the protocol of the stage2-LANG steps.
    pair = [
        f"sweep.methods={_list(STAGE2_METHODS)}",
        "sweep.schedules=[two_stage]",
        f"sweep.stage1_from={{{STAGE2_SOURCES}}}",
    ]
    # English has no translation of its own to align with: it takes stage 1's pairs.
    english = [*sweep_common, "sweep.languages=[en]", align_targets, *pair]
    for name, k_values, protocol in STAGE2_CANDIDATES:
        out.append(
            Step(
                f"stage2-en-{name}",
                "sweep",
                [*english, f"sweep.k={_list(k_values)}", *protocol],
                needs=[f"train-{m}" for m in STAGE2_RUNS],
                block="c",
            )
        )
    # Plain LoRA on every linear layer at k = 0 on the sweeps' questions: its source run
    # scored on each language's first 300 evaluated questions, as a sweep's k = 0 run scores
    # them (the other methods' k = 0 came with their sweeps).
    out.append(
        Step(
            "xquad300-lora_all_linear",
            "evaluate",
            [
                "checkpoint=<train-lora_all_linear>",
                f"data.eval_languages={_list(FEW_SHOT_LANGUAGES)}",
                "data.pool_fraction=0.2",
                "data.max_eval_examples=300",
            ],
            needs=["train-lora_all_linear"],
            block="c",
        )
    )
    if STAGE2_CHOSEN == "steps40":
        return out  # the 40-step protocol's target runs are (c)'s own
    # The chosen candidate in the three target languages, k = 8 and 32, on (c)'s seeds and
    # k-shot samples.
    protocols = {name: protocol for name, _, protocol in STAGE2_CANDIDATES}
    # (c)'s third method, LoRA on query and value from its own source run, ran after the
    # two others: steps of its own, so theirs stay as committed.
    lora = [
        "sweep.methods=[lora]",
        "sweep.schedules=[two_stage]",
        "sweep.stage1_from={lora:'<train-lora>'}",
        FIRST_PRESET,
    ]
    variants = [("", pair, [f"train-{m}" for m in STAGE2_RUNS]), ("-lora", lora, ["train-lora"])]
    # k = 128, which (c) first had only under 40 steps, ran later in steps of its own, so the
    # k = 8 and 32 ones stay as committed.
    k_sets = [("", "[8,32]"), ("-k128", "[128]")]
    for k_suffix, k_values in k_sets:
        for suffix, methods, needs in variants:
            for lang in FEW_SHOT_LANGUAGES:
                out.append(
                    Step(
                        f"stage2-{lang}-{STAGE2_CHOSEN}{suffix}{k_suffix}",
                        "sweep",
                        [
                            *sweep_common,
                            f"sweep.languages=[{lang}]",
                            *methods,
                            f"sweep.k={k_values}",
                            *protocols[STAGE2_CHOSEN],
                        ],
                        needs=needs,
                        block="c",
                    )
                )
    # Plain LoRA with the preset's targets (every linear layer of the blocks), from its own
    # source run: the baseline closest to the paper's method without prompts or alignment.
    # Its one-point grid labels its rows apart from LoRA on query and value.
    stage2_protocol, _ = protocols[STAGE2_CHOSEN]  # the grid below adds the layers
    passes = STAGE2_CHOSEN.removeprefix("epochs")
    for lang in FEW_SHOT_LANGUAGES:
        out.append(
            Step(
                f"stage2-{lang}-{STAGE2_CHOSEN}-lora_all_linear",
                "sweep",
                [
                    *sweep_common,
                    f"sweep.languages=[{lang}]",
                    "sweep.methods=[lora]",
                    "sweep.schedules=[two_stage]",
                    "sweep.stage1_from={lora:'<train-lora_all_linear>'}",
                    "sweep.k=[8,32,128]",
                    stage2_protocol,
                    f"sweep.grid={{trainer.epochs:[{passes}],adapter.layers:[all_linear]}}",
                ],
                needs=["train-lora_all_linear"],
                block="c",
            )
        )
    # (e) under the chosen protocol: the paper's method and full fine-tuning with
    # self-training, each taught by its own source run.
    for method, run in zip(STAGE2_METHODS, STAGE2_RUNS, strict=True):
        for lang in FEW_SHOT_LANGUAGES:
            out.append(
                Step(
                    f"stage2-pseudo-{lang}-{STAGE2_CHOSEN}-{method}",
                    "sweep",
                    [
                        *sweep_common,
                        f"sweep.languages=[{lang}]",
                        f"sweep.methods=[{method}]",
                        "sweep.schedules=[two_stage]",
                        f"sweep.stage1_from={{{method}:'<train-{run}>'}}",
                        "sweep.k=[8,32]",
                        *protocols[STAGE2_CHOSEN],
                        "pseudo=self_train",
                        f"pseudo.teacher=<train-{run}>",
                    ],
                    needs=[f"train-{run}"],
                    block="e",
                )
            )
    return out


# -- where things are ----------------------------------------------------------------------
def kept(step: Step) -> Path:
    return RESULTS / "runs" / step.name


def finished_runs(record: Path) -> tuple[int, int]:
    """How many of a sweep.json's planned runs have finished (or were found finished)."""
    runs = json.loads(record.read_text())["runs"]
    return sum(r["status"] in ("finished", "skipped") for r in runs), len(runs)


def done(step: Step) -> bool:
    if step.verb != "sweep":
        return (kept(step) / "metrics.json").is_file()
    record = kept(step) / "sweep.json"
    if not record.is_file():
        return False
    finished, planned = finished_runs(record)
    return finished == planned


def trained_at(step: Step, adopted: dict[str, str]) -> Path:
    return Path(adopted.get(step.name, WORK / step.name))


def has_weights(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file() and (run_dir / "checkpoint").is_dir()


def read_adopted() -> dict[str, str]:
    path = WORK / "adopted.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# -- running ---------------------------------------------------------------------------------
def run_step(step: Step, data_root: str, where: dict[str, str]) -> None:
    target = WORK / step.name
    argv = step.command(data_root, where)
    if step.verb == "sweep":
        if (kept(step) / "sweep.json").is_file() and not (target / "sweep.json").is_file():
            # A new machine: the finished runs come back from git, so only the rest run.
            shutil.copytree(kept(step), target, dirs_exist_ok=True)
        if (target / "sweep.json").is_file():
            argv = ["sweep", "--resume", str(target)]
        else:
            argv.append(f"hydra.sweep.dir={target}")
    else:
        if target.exists() and not (target / "metrics.json").is_file():
            argv.append("resume=true")  # an interrupted train step carries on
        argv.append(f"hydra.run.dir={target}")
    log = WORK / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {step.name}: lowres {' '.join(argv)}", flush=True)
    with log.open("a") as out:
        code = subprocess.call(
            [sys.executable, "-m", "lowres.cli", *argv], stdout=out, stderr=subprocess.STDOUT
        )
    if code != 0:
        sys.exit(f"study: step {step.name} failed (exit {code}); its log is {log}.")


def _not_kept(folder: str, names: list[str]) -> set[str]:
    """Weights and checkpoints, and the split records of source-pool runs (9k ids each; the
    k-shot runs' small ones stay, as the record of which examples each seed drew)."""
    skipped = shutil.ignore_patterns(*NOT_KEPT)(folder, names)
    split = Path(folder) / "data_split.json"
    if "data_split.json" in names and split.stat().st_size > 200_000:
        skipped.add("data_split.json")
    return skipped


def keep_step(step: Step, run_dir: Path) -> None:
    """Copy a finished step's results (no weights) to results/study_me5/runs/<step>/."""
    if step.verb == "sweep":
        shutil.copytree(run_dir, kept(step), dirs_exist_ok=True, ignore=_not_kept)
        compress_predictions(kept(step))
        return
    keep(run_dir, kept(step))
    # The loss curves; not data_split.json, whose 9k source ids the command rebuilds.
    if (run_dir / "train_log.jsonl").is_file():
        shutil.copyfile(run_dir / "train_log.jsonl", kept(step) / "train_log.jsonl")


def commit(step: Step, state: str = "finished") -> None:
    subprocess.run(["git", "add", str(kept(step))], check=True)
    message = f"study_me5: step {step.name} {state} ({step.verb}), results in {kept(step)}"
    subprocess.run(["git", "commit", "-q", "-m", message], check=False)


def ensure_weights(
    name: str, by_name: dict[str, Step], data_root: str, adopted: dict[str, str]
) -> str:
    step = by_name[name]
    run_dir = trained_at(step, adopted)
    if not has_weights(run_dir):
        print(f"{name}: no trained weights in {run_dir}; training it again there.")
        if run_dir.exists() and (run_dir / "metrics.json").is_file():
            shutil.rmtree(run_dir)
        run_step(step, data_root, {})
    return str(run_dir)


def cmd_run(args) -> None:
    by_name = {s.name: s for s in steps()}
    adopted = read_adopted()
    for spec in args.have:
        name, _, run_dir = spec.partition("=")
        if name not in by_name or not has_weights(Path(run_dir)):
            sys.exit(
                f"study: --have {spec}: expected STEP=RUN_DIR, a step name and a finished run "
                "folder (metrics.json and checkpoint/)."
            )
        adopted[name] = str(Path(run_dir).resolve())
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / "adopted.json").write_text(json.dumps(adopted, indent=1))
        if not done(by_name[name]):
            keep_step(by_name[name], Path(run_dir))
            if args.commit:
                commit(by_name[name])
    chosen = args.steps or list(by_name)
    for name in chosen:
        if name not in by_name:
            sys.exit(f"study: no step {name!r}; `python scripts/study_me5.py status` lists them.")
        step = by_name[name]
        if done(step):
            continue
        where = {
            need: ensure_weights(need, by_name, args.data_root, adopted) for need in step.needs
        }
        run_step(step, args.data_root, where)
        keep_step(step, WORK / step.name)
        if args.commit:
            commit(step)


def cmd_keep(args) -> None:
    """Keep the finished runs of sweep steps still running or cut short (a session ending).

    The kept runs count as finished when the step runs again, on any machine with the clone.
    """
    by_name = {s.name: s for s in steps()}
    for name in args.steps:
        step = by_name.get(name)
        record = WORK / name / "sweep.json"
        if step is None or step.verb != "sweep" or not record.is_file():
            sys.exit(
                f"study: keep {name}: expected a sweep step that has started here "
                f"({WORK}/<step>/sweep.json); `python scripts/study_me5.py status` lists them."
            )
        keep_step(step, WORK / name)
        finished, planned = finished_runs(record)
        print(f"{name}: kept {finished} of {planned} runs in {kept(step)}")
        if args.commit:
            commit(step, f"{finished} of {planned} runs finished")


def cmd_status(args) -> None:
    adopted = read_adopted()
    for step in steps():
        state = "done" if done(step) else "to run"
        line = f"{step.block:7} {step.name:30} {state}"
        if args.commands:
            where = {s: f"<{s}>" for s in step.needs}
            line += "\n        lowres " + " ".join(step.command(args.data_root, where))
        if step.name in adopted:
            line += f"   (weights: {adopted[step.name]})"
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("LOWRES_DATA", "../shared/data"))
    sub = parser.add_subparsers(dest="verb", required=True)
    status = sub.add_parser("status", help="every step and whether its results are in results/")
    status.add_argument("--commands", action="store_true", help="print each step's command")
    run = sub.add_parser("run", help="run the steps not done yet (all, or those named)")
    run.add_argument("steps", nargs="*")
    run.add_argument("--commit", action="store_true", help="git commit each step's results")
    run.add_argument("--have", action="append", default=[], metavar="STEP=RUN_DIR")
    keep_parser = sub.add_parser("keep", help="keep a sweep step's finished runs so far")
    keep_parser.add_argument("steps", nargs="+")
    keep_parser.add_argument("--commit", action="store_true", help="git commit what is kept")
    sub.add_parser("report", help="the tables and plots of results/study_me5/")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    verbs = {"status": cmd_status, "run": cmd_run, "keep": cmd_keep, "report": cmd_report}
    verbs[args.verb](args)


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
    for name, _, _ in STAGE2_CANDIDATES:
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


def cmd_report(args) -> None:
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
    candidates = [name for name, _, _ in STAGE2_CANDIDATES]
    stage2_steps = [step.name for step in steps() if step.name.startswith("stage2-")]
    english = [name for name in stage2_steps if name.startswith("stage2-en-")]
    targets = [
        name for name in stage2_steps if not name.startswith(("stage2-en-", "stage2-pseudo-"))
    ]
    paper = "prompt_align"
    # (e) under the chosen protocol: each method with self-training against the same runs
    # without (same seeds, same k-shot samples), and the two methods with it against each
    # other, once their steps ran.
    untaught = [f"stage2-{lang}-{STAGE2_CHOSEN}" for lang in FEW_SHOT_LANGUAGES]
    taught = {
        method: [
            name
            for name in stage2_steps
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
