"""Every `lowres ...` command printed in README.md and docs/ composes and validates.

The commands are read from the Markdown's shell code blocks (```bash, ```sh, ```shell,
```console or unlabelled; ```text blocks are synopses and outputs). Each is checked in-process
the way `lowres` checks it before anything trains, with the placeholders the pages use filled
in by real fixtures:

- `RUN_DIR`, `RUN`, `$teacher`, `outputs/<task>/<backbone>/<date...>`: a finished run folder
  (its saved `.hydra/config.yaml`, made by composing a tiny-bert XQuAD run);
- `SWEEP_DIR`, `outputs/sweeps/...`, `outputs/multirun/<date_time>`: the committed sweep folder
  `results/study_me5/runs/fewshot-de` (it holds a `sweep.json`);
- `DIR` and `DATA_ROOT` as `data.root`: the data root (`LOWRES_DATA`, default ../shared/data);
- `$PWD/my_configs`: a config folder holding the user presets the pages name
  (`method/my_method.yaml`, a copy of `deep_prompt.yaml`; `task/mynli.yaml`, of `pair_tsv.yaml`).

`train` and `sweep` commands are composed with Hydra and validated (`-m` multiruns: every swept
value at least once); a sweep is also planned. `evaluate` commands are composed and their config is
rebuilt from the fixture run as `lowres evaluate` rebuilds it, then validated. `report`,
`score` and `convert` have their arguments parsed by the real parsers (nothing is written).
Skipped, because they need a real interrupted run or sweep: `--resume` commands (the list is
asserted below, so a new one is seen).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf

from lowres import cli, commandline
from lowres.errors import LowresError
from lowres.launchers import check_launcher
from lowres.recipes.evaluate import checkpoint_config
from lowres.schema import check_override_keys, config_dir, register_schemas, validate
from lowres.sweeps.plan import plan_from_spec, user_config_dirs

SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "docs_commands"
SWEEP = REPO / "results" / "study_me5" / "runs" / "fewshot-de"
DATA_ROOT = os.environ.get("LOWRES_DATA", str(REPO.parent / "shared" / "data"))
# Commands that need a real interrupted run or sweep folder; checked by their own tests
# (tests/recipes/test_resume.py, tests/recipes/test_sweep_runs.py), not here.
NEEDS_A_REAL_RUN = ("--resume",)


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def shell_lines(markdown: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every shell code block, continuations joined."""
    out, fence, joined, start = [], None, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip().lower() if fence is None else None
            continue
        if fence not in SHELL_BLOCKS:
            continue
        if not joined:
            start = number
        joined += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            out.append((start, joined.strip()))
            joined = ""
    return out


def commands_in(path: Path) -> list[Command]:
    found = []
    for number, line in shell_lines(path.read_text()):
        words = shlex.split(line, comments=True)
        if "lowres" not in words:
            continue
        at = words.index("lowres")
        # `lowres ...` itself, or `torchrun ... -m lowres ...` / `python -m lowres ...`
        if at == 0 or words[at - 1] == "-m":
            page = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
            found.append(Command(page, number, shlex.join(words[at:])))
    return found


def documented_commands() -> list[Command]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    seen, out = set(), []
    for page in pages:
        for command in commands_in(page):
            if command.text not in seen:
                seen.add(command.text)
                out.append(command)
    return out


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The real folders the placeholders stand for."""
    root = tmp_path_factory.mktemp("docs_commands")
    register_schemas()
    run = root / "run"
    (run / ".hydra").mkdir(parents=True)
    cfg, _ = commandline.compose("train", ["+task=xquad", "backbone=tiny-bert", "trainer=smoke"])
    saved = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    (run / "metrics.json").write_text('{"per_language": {}}')
    presets = root / "my_configs"
    (presets / "method").mkdir(parents=True)
    (presets / "task").mkdir()
    shutil.copyfile(
        config_dir() / "method" / "deep_prompt.yaml", presets / "method" / "my_method.yaml"
    )
    text = (config_dir() / "task" / "pair_tsv.yaml").read_text()
    (presets / "task" / "mynli.yaml").write_text(re.sub(r"(?m)^name: .*$", "name: mynli", text))
    return {"run": run, "presets": presets, "out": root / "out"}


def substitute(words: list[str], places: dict[str, Path]) -> list[str]:
    run, sweep = str(places["run"]), str(SWEEP)
    out = []
    for word in words:
        word = word.replace("$PWD/my_configs", str(places["presets"].parent / "my_configs"))
        word = word.replace("$teacher", run)
        key, sep, value = word.partition("=")
        if sep and value in ("DIR", "DATA_ROOT") and key.endswith("data.root"):
            word = f"{key}={DATA_ROOT}"
        elif sep and (
            value in ("RUN_DIR", "RUN") or re.fullmatch(r"outputs/\w+/[\w.-]+/<?[\w-]+>?", value)
        ):
            word = f"{key}={run}"
        elif sep and key == "sweep.stage1_from":
            word = re.sub(r"RUN_DIR", run, word)
        elif word in ("SWEEP_DIR", "DIR_A", "DIR_B") or re.fullmatch(
            r"outputs/(sweeps|multirun)/\S*", word
        ):
            word = sweep
        out.append(word)
    return out


def expand_multirun(overrides: list[str]) -> list[list[str]]:
    """A `-m` command's single runs, so that every swept value is composed at least once:
    run i takes the i-th value of each swept key (cycling through the shorter lists)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override, text in zip(parsed, overrides, strict=True):
        if override.is_sweep_override():
            key = override.get_key_element()
            sweep = override.value()
            if isinstance(sweep, IntervalSweep):  # an Optuna search space: both of its ends
                values = [sweep.start, sweep.end]
            else:
                values = list(override.sweep_string_iterator())
            choices.append([f"{key}={value}" for value in values])
        else:
            choices.append([text])
    runs = max(len(values) for values in choices)
    return [[values[i % len(values)] for values in choices] for i in range(runs)]


def check_hydra_command(verb: str, overrides: list[str], places: dict[str, Path]) -> None:
    """What `lowres train|sweep|evaluate` checks before it trains or evaluates anything."""
    register_schemas()
    if verb == "evaluate":
        overrides = commandline._normalize_task(overrides)
        commandline._check_evaluate_overrides(overrides)
        cfg, _ = commandline.compose("evaluate", overrides)
        rebuilt = checkpoint_config(cfg, places["out"])
        given = [
            o.lstrip("+")
            for o in overrides
            if not o.lstrip("+").startswith(("checkpoint=", "task="))
        ]
        validate(OmegaConf.merge(rebuilt, OmegaConf.from_dotlist(given)))
        return
    overrides = commandline._absolute_paths(commandline._normalize_task(overrides))
    if verb == "sweep":
        overrides = commandline.normalize_grid(overrides)
    commandline._check_method(overrides)
    if not commandline._has_task(overrides):
        raise LowresError(f"lowres {verb} needs a task")
    check_launcher(overrides, config_dir())
    cfg, _ = commandline.compose(verb, overrides)
    validate(cfg)
    if verb == "sweep":
        spec = OmegaConf.to_container(cfg.sweep, resolve=True)
        languages = list(spec["languages"] or cfg.data.eval_languages)
        dirs = user_config_dirs(list(cfg.hydra.searchpath))
        plan_from_spec(spec, languages, places["out"] / "sweep", config=cfg, config_dirs=dirs)


def check_command(command: Command, places: dict[str, Path]) -> None:
    """Raise (LowresError, SystemExit, ...) if the command would not start."""
    words = substitute(shlex.split(command.text)[1:], places)
    if not words or words[0] in ("--help", "-h"):
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as done:
            cli.main(words)
        assert done.value.code == 0
        return
    verb, rest = words[0], words[1:]
    if verb in cli.HYDRA_VERBS:
        flags = {"-m", "--multirun"}
        multirun = any(word in flags for word in rest)
        at = rest.index("--cfg") if "--cfg" in rest else None
        if at is not None:  # --cfg job: print the config, i.e. compose it
            rest = rest[:at] + rest[at + 2 :]
        rest = [word for word in rest if word not in flags]
        for overrides in expand_multirun(rest) if multirun else [rest]:
            check_override_keys(overrides)
            check_hydra_command(verb, overrides, places)
        return
    # The other verbs: the real argument parser, the work itself replaced by a recorder.
    with pytest.MonkeyPatch.context() as patch:
        calls = []
        if verb == "report":
            patch.setattr("lowres.sweeps.report.write_report", lambda *a: calls.append(a))
        elif verb == "convert":
            from lowres.convert import me5_small

            patch.setattr(me5_small, "convert_to", lambda *a: calls.append(a) or Path("x"))
            patch.setattr(me5_small, "ensure_converted", lambda *a: calls.append(a) or Path("x"))
        elif verb == "study":  # the spec is loaded and checked for real; no step runs
            from lowres.sweeps import study, study_runner

            state = {"steps": [], "waiting_for_search": [], "done": 0, "planned": 0}
            patch.setattr(study_runner, "run_study", lambda *a, **k: calls.append(a) or 0)
            # whether this machine could run the spec's pinned precision is not the docs' test
            patch.setattr(study_runner, "machine_problem", lambda spec, steps=None: None)
            patch.setattr(study, "status", lambda *a: calls.append(a) or state)
            patch.setattr(study, "report", lambda *a, **k: calls.append(a))
        elif verb == "score":
            patch.setattr("lowres.score.score_qa", lambda *a: calls.append(a) or {})
            patch.setattr("lowres.score.score_accuracy", lambda *a: calls.append(a) or {})
        else:
            raise LowresError(f"unknown verb {verb}")
        with contextlib.redirect_stdout(io.StringIO()):
            cli.main(words)
        assert calls, f"lowres {verb} did not reach its work"
        if verb == "report":
            for folder in calls[0][0]:
                assert (Path(folder) / "sweep.json").is_file(), f"{folder} is not a sweep folder"


def test_docs_commands_are_collected():
    texts = [c.text for c in COMMANDS]
    pages = {c.page for c in COMMANDS}
    assert len(COMMANDS) >= 40 and "README.md" in pages
    assert any(p.startswith("docs/guides/") for p in pages)
    assert "lowres train +task=xquad +method=full_frozen_embeddings trainer=quickstart" in texts
    skipped = sorted(c.text for c in COMMANDS if any(w in c.text for w in NEEDS_A_REAL_RUN))
    assert skipped == [], skipped  # the pages print --resume only in prose and synopses


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_docs_commands_compose_and_validate(command, places):
    check_command(command, places)


def test_docs_commands_check_fails_on_a_broken_page(places):
    broken = commands_in(FIXTURES / "broken.md")
    assert [c.line for c in broken] == [4, 5, 9, 14]
    errors = {}
    for command in broken:  # each is refused, with the reason lowres would print
        with pytest.raises((LowresError, SystemExit)) as failed:
            check_command(command, places)
        errors[command.line] = str(failed.value)
    assert "trainer.lrr" in errors[4]
    assert "prompt=deeep is not a prompt option" in errors[5]
    assert "sweep.methods names 'no_such_method'" in errors[9]
    assert "data.k" in errors[14]
    # the fixture's good commands pass (so the failures above are the broken words')
    for command in commands_in(FIXTURES / "good.md"):
        check_command(command, places)


def test_a_multirun_is_checked_at_every_swept_value():
    runs = expand_multirun(["+task=xquad", "prompt.length=10,20,40", "trainer.seed=1,2"])
    assert runs == [
        ["+task=xquad", "prompt.length=10", "trainer.seed=1"],
        ["+task=xquad", "prompt.length=20", "trainer.seed=2"],
        ["+task=xquad", "prompt.length=40", "trainer.seed=1"],
    ]
