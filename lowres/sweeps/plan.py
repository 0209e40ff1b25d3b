"""``lowres sweep``: k-shot x seeds x target languages x methods x other keys.

The plan is lowres's own rather than a Hydra multirun's cartesian product: k-shot samples
are nested, two-stage runs depend on their stage-1 run, a failing run is recorded and the
rest go on, and a rerun skips what finished. The runs go through one process by default
(the backbone loaded once per (backbone, head, seed)) or through a Hydra launcher
(``hydra/launcher=slurm``, ``local_gpus``; see run.py). The sweep folder
(``hydra.sweep.dir``) holds ``sweep.json`` (the plan with each run's status) and one run
folder per run under ``runs/``, each the same as a ``lowres train`` folder (``lowres
evaluate checkpoint=...`` works on it).

Schedules:

* ``joint``: each k-shot run trains on the source pool plus k target-language examples;
  k = 0 is one run evaluated on every language (zero-shot transfer).
* ``two_stage``: stage 1 trains on the source pool once per (method, grid point, seed) and
  is evaluated on every language (its scores are the k = 0 row); each k > 0 run then starts
  from stage 1's trained parameters (``init_from``) and trains on the k examples only.
"""

from __future__ import annotations

import difflib
import functools
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.default_element import ConfigDefault, GroupDefault
from hydra.core.object_type import ObjectType
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lowres.errors import ConfigError, DataFormatError, LowresError
from lowres.files import inside, read_json
from lowres.overrides import key_of
from lowres.runfolder import RunFolder
from lowres.schema import config_dir, register_schemas, trains, validate

SWEEP_FILE = "sweep.json"
ERROR_FILE = "error.json"
SCHEDULES = ("joint", "two_stage")
_ABSENT = object()
# The sweep sets these per run; a method, a grid key or a stage override may not.
SWEPT_BY_SWEEP = ("data.k", "trainer.seed", "data.eval_languages", "init_from", "data.source_pool")


@dataclass
class PlannedRun:
    name: str  # folder under runs/
    method: str
    schedule: str  # joint | two_stage
    grid: dict[str, Any]
    k: int
    seed: int
    languages: list[str]  # evaluated by this run
    overrides: list[str]
    stage: int = 0  # 0 joint, 1 two-stage source run, 2 two-stage k-shot run
    depends_on: str = ""  # stage-1 run this one starts from
    status: str = "planned"  # planned | finished | skipped | failed
    error: str = ""
    wall_s: float | None = None
    overhead_s: float | None = None  # wall time minus train and eval time


@dataclass
class SweepPlan:
    runs: list[PlannedRun] = field(default_factory=list)


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _label(grid: dict[str, Any]) -> str:
    if not grid:
        return "base"
    text = ",".join(f"{k}={_format(v)}" for k, v in grid.items())
    return "".join(c if c.isalnum() or c in "._=,-" else "-" for c in text)


def user_config_dirs(searchpath: Sequence[str]) -> list[Path]:
    """The folders of ``hydra.searchpath`` entries (``file://DIR``; packages are skipped)."""
    return [
        Path(entry.removeprefix("file://"))
        for entry in searchpath
        if "://" not in entry or entry.startswith("file://")
    ]


def method_dirs(config_dirs: Sequence[Path] = ()) -> list[Path]:
    """The method folders a preset is looked up in, for messages: lowres's, then the user's."""
    return [config_dir() / "method", *(Path(d) / "method" for d in config_dirs)]


# Method presets are read the way Hydra reads them for a run: through its config repository
# over lowres's configs and the user's folders (hydra.searchpath), in Hydra's order. The
# loader is Hydra's own (hydra._internal: hydra-core is pinned below 1.4 in pyproject.toml).


@functools.cache
def _loader() -> ConfigLoaderImpl:
    register_schemas()
    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(config_dir())))


def _searchpath(config_dirs: Sequence[Path]) -> list[str]:
    if not config_dirs:
        return []
    return [f"hydra.searchpath=[{','.join(f'file://{Path(d)}' for d in config_dirs)}]"]


@functools.cache
def _repository(config_dirs: tuple[Path, ...]):
    _, repository = _loader()._parse_overrides_and_create_caching_repo(
        None, _searchpath(config_dirs)
    )
    return repository


def has_method(method: str, config_dirs: Sequence[Path] = ()) -> bool:
    """Whether ``method/NAME`` is a preset Hydra finds (a name, not a path)."""
    if not inside(config_dir() / "method", f"{method}.yaml") or "/" in method:
        return False
    return _repository(tuple(config_dirs)).config_exists(f"method/{method}")


def method_names(config_dirs: Sequence[Path] = ()) -> list[str]:
    """Every method preset's name, lowres's and the user's."""
    return sorted(_repository(tuple(config_dirs)).get_group_options("method", ObjectType.CONFIG))


def check_method(method: str, config_dirs: Sequence[Path] = ()) -> None:
    """A ConfigError naming the presets there are, unless ``method`` is one of them."""
    if has_method(method, config_dirs):
        return
    searched = ", ".join(str(f) for f in method_dirs(config_dirs))
    raise ConfigError(
        f"sweep.methods names {method!r}, but no method/{method}.yaml is in the config "
        f"folders ({searched}); the methods are {', '.join(method_names(config_dirs))}. A "
        "preset of your own goes in DIR/method/NAME.yaml, with hydra.searchpath=[file://DIR] "
        "on the command line."
    )


def method_keys(method: str, config_dirs: Sequence[Path] = ()) -> set[str]:
    """The config keys and groups a ``method/NAME`` preset sets, as Hydra loads it."""
    check_method(method, config_dirs)
    loaded = _repository(tuple(config_dirs)).load_config(f"method/{method}")
    keys = set()
    for entry in loaded.defaults_list or []:
        if isinstance(entry, GroupDefault):
            keys.add(entry.group.strip("/ "))
        elif isinstance(entry, ConfigDefault) and not entry.is_self():
            # A preset that extends another method preset sets everything that one sets too.
            keys |= method_keys(entry.path, config_dirs)
    return keys | set(_leaf_keys(OmegaConf.to_container(loaded.config, resolve=False)))


@functools.cache
def _evaluates_only(method: str, config_dirs: tuple[Path, ...]) -> bool:
    composed = _loader().load_configuration(
        "train", [f"+method={method}", *_searchpath(config_dirs)], RunMode.RUN
    )
    return not trains(composed.trainer)


def evaluates_only(method: str, config_dirs: Sequence[Path] = ()) -> bool:
    """Whether a preset turns training off (``trainer.epochs: 0``, like ``untrained``): the
    run config composed with it does not train."""
    check_method(method, config_dirs)
    return _evaluates_only(method, tuple(config_dirs))


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _leaf_keys(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def check_grid_keys(
    grid: dict[str, list[Any]], config: Any, config_dirs: Sequence[Path] = ()
) -> None:
    """Refuse a grid key that is neither a config group nor a key of the composed config.

    Without this a misspelt key (``prompt.lenght``) would be found by the first run's
    composition only, and every run of the sweep would fail the same way.
    """
    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("sweep", None)
    folders = [*config_dirs, config_dir()]
    for key, values in grid.items():
        group = [f / key for f in folders if (f / key).is_dir() and any((f / key).glob("*.yaml"))]
        if group:
            options = sorted({p.stem for folder in group for p in folder.glob("*.yaml")})
            unknown = [str(v) for v in values if str(v) not in options]
            if unknown:
                raise ConfigError(
                    f"sweep.grid sweeps the config group {key} over {', '.join(unknown)}, "
                    f"which it does not have; its options are {', '.join(options)}."
                )
            continue
        node: Any = plain
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT or key.startswith(("hydra", "sweep")):
            close = difflib.get_close_matches(key, _leaf_keys(plain), n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(
                f"sweep.grid holds {key!r}, which is not a config key or group, so every run "
                f"would fail to compose.{hint} Grid keys are run config keys such as "
                "align.weight or prompt.length, or groups such as freeze or backbone "
                "(`lowres train +task=xquad --cfg job` prints them all)."
            )
        for value in values:
            _check_grid_value(config, key, value)


def _check_grid_value(config: Any, key: str, value: Any) -> None:
    """One grid value, typed and range-checked with the schema as its run will be, so a
    bad one is refused at plan time and not by its runs, one by one, after others ran.

    Only what the value itself breaks is refused here: a combination with a method preset
    that the composed config lacks is its run's to check.
    """
    point = config.copy()
    try:
        OmegaConf.update(point, key, value, merge=False)
    except OmegaConfBaseException as err:
        raise ConfigError(
            f"sweep.grid gives {key} the value {value!r}, which it cannot take: "
            f"{str(err).splitlines()[0]}. Fix that value in sweep.grid."
        ) from None
    try:
        validate(point)
    except ConfigError as err:
        if key in str(err):
            raise ConfigError(f"sweep.grid gives {key} the value {value!r}: {err}") from None


def check_keys(grid: dict[str, list[Any]], stage1: Sequence[str], stage2: Sequence[str]) -> None:
    """Refuse swept keys that collide: the sweep's own, or a grid key a stage also sets.

    A grid key that a method preset sets is no collision: the grid's value is a command-line
    override, so it replaces the preset's (:func:`grid_replaces` names them for the log).
    """
    for where, overrides in [
        ("sweep.grid", [f"{k}=" for k in grid]),
        ("sweep.stage1", stage1),
        ("sweep.stage2", stage2),
    ]:
        for override in overrides:
            if key_of(override) in SWEPT_BY_SWEEP:
                raise ConfigError(
                    f"{where} sets {key_of(override)}, which the sweep itself varies "
                    "(sweep.k, sweep.seeds, sweep.languages, schedules); remove it there and "
                    "use the sweep.* list instead."
                )
    for where, overrides in [("sweep.stage1", stage1), ("sweep.stage2", stage2)]:
        both = sorted({key_of(o) for o in overrides} & set(grid))
        if both:
            # The stage's override comes after the grid's, so every grid point would run
            # with the stage's value and the sweep would report one setting under many labels.
            raise ConfigError(
                f"Conflicting swept keys: {', '.join(both)} is swept by sweep.grid and also set "
                f"by {where}, whose value would replace every grid point's. Keep the key in "
                "one place: drop it from the grid or from the stage overrides."
            )


def grid_replaces(
    methods: Sequence[str], grid: dict[str, list[Any]], config_dirs: Sequence[Path] = ()
) -> dict[str, list[str]]:
    """For each method, the grid keys whose values replace the ones its preset sets."""
    replaced = {m: sorted(set(grid) & method_keys(m, config_dirs)) for m in methods}
    return {m: keys for m, keys in replaced.items() if keys}


def plan_sweep(
    *,
    k_values: Sequence[int],
    seeds: Sequence[int],
    languages: Sequence[str],
    methods: Sequence[str],
    grid: dict[str, list[Any]],
    schedules: Sequence[str],
    stage1: Sequence[str] = (),
    stage2: Sequence[str] = (),
    stage1_once: bool = False,
    stage1_from: dict[str, str] | None = None,
    sweep_dir: Path,
    config_dirs: Sequence[Path] = (),
) -> SweepPlan:
    """Every run of the sweep, stage-1 runs before the runs that start from them.

    ``stage1_from`` maps a method to a finished source-trained run: its two-stage k-shot runs
    start from that run (no stage-1 run is planned), and its k = 0 point evaluates it as is.
    """
    _check_lists(k_values, seeds, languages, methods, schedules)
    check_keys(grid, stage1, stage2)
    stage1_from = dict(stage1_from or {})
    check_stage1_from(stage1_from, methods, schedules, grid)
    presets = {m: [f"+method={m}"] for m in methods} or {"configured": []}
    every_language = f"data.eval_languages={_format(list(languages))}"
    grid_points = [
        dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())
    ]
    untrained = {m for m in methods if evaluates_only(m, config_dirs)}
    plan = SweepPlan()
    for method, point, schedule in itertools.product(presets, grid_points, schedules):
        shared = [*presets[method], *(f"{k}={_format(v)}" for k, v in point.items())]
        folder = f"{method}/{_label(point)}/{schedule}"
        for seed in seeds:
            common = dict(method=method, schedule=schedule, grid=point, seed=seed)
            seeded = [*shared, f"trainer.seed={seed}"]
            if method in untrained:
                # Nothing trains, so k and the schedule change nothing: one zero-shot run
                # per seed is the whole floor (the seed draws the fresh head).
                if schedule == schedules[0]:
                    plan.runs.append(
                        zero_shot(folder, languages, [*seeded, every_language], common)
                    )
                continue
            # stage1_once trades seed variance of the source run for cost: every seed's
            # k-shot runs then differ only in their sample, order and stage-2 init.
            stage1_seed = seeds[0] if stage1_once else seed
            stage1_name = f"{folder}/stage1_seed{stage1_seed}"
            given = stage1_from.get(method) if schedule == "two_stage" else None
            # One given run is one model: scored once (first seed), not once per seed.
            if given and 0 in k_values and seed == seeds[0]:
                # Nothing trains: the given run, scored on this sweep's questions.
                as_given = [f"init_from={given}", "data.source_pool=false", "trainer.epochs=0"]
                overrides = [*seeded, every_language, *as_given, "trainer.max_steps=-1"]
                plan.runs.append(zero_shot(folder, languages, overrides, common))
            if schedule == "two_stage" and stage1_seed == seed and not given:
                plan.runs.append(
                    PlannedRun(
                        name=stage1_name,
                        k=0,
                        languages=list(languages),
                        overrides=[*seeded, *stage1, "data.k=0", every_language],
                        stage=1,
                        **common,
                    )
                )
            # A two-stage k-shot run starts from its stage-1 run (or the given one).
            start = ""
            if schedule == "two_stage":
                start = given or str((sweep_dir / "runs" / stage1_name).resolve())
            depends_on = "" if given else stage1_name
            plan.runs += _kshot_runs(
                folder, k_values, languages, seeded, common, stage2, start, depends_on
            )
    return plan


def _check_lists(
    k_values: Sequence[int],
    seeds: Sequence[int],
    languages: Sequence[str],
    methods: Sequence[str],
    schedules: Sequence[str],
) -> None:
    if not k_values or not seeds or not languages:
        raise ConfigError(
            "sweep.k, sweep.seeds and sweep.languages (or data.eval_languages) must each hold "
            "at least one value, e.g. sweep.k=[0,8] sweep.seeds=[1,2] sweep.languages=[de,es]."
        )
    for schedule in schedules:
        if schedule not in SCHEDULES:
            raise ConfigError(
                f"sweep.schedules holds {schedule!r}; expected joint and/or two_stage, e.g. "
                "sweep.schedules=[joint,two_stage]."
            )
    if any(k < 0 for k in k_values):
        raise ConfigError(f"sweep.k={list(k_values)} holds a negative k; use 0 for zero-shot.")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"sweep.methods={list(methods)} names a method twice.")


def _kshot_runs(
    folder: str,
    k_values: Sequence[int],
    languages: Sequence[str],
    seeded: list[str],
    common: dict[str, Any],
    stage2: Sequence[str],
    start: str,
    depends_on: str,
) -> list[PlannedRun]:
    """The runs of one (method, grid point, schedule, seed) per k: joint k = 0 on every
    language at once, each k > 0 per language (two-stage: from ``start``)."""
    runs = []
    for k in k_values:
        if k == 0:
            if common["schedule"] == "joint":
                every_language = f"data.eval_languages={_format(list(languages))}"
                runs.append(zero_shot(folder, languages, [*seeded, every_language], common))
            continue
        for lang in languages:
            overrides = [*seeded, f"data.k={k}", f"data.eval_languages=[{lang}]"]
            extra: dict[str, Any] = {}
            if common["schedule"] == "two_stage":
                overrides += [*stage2, f"init_from={start}", "data.source_pool=false"]
                extra = {"stage": 2, "depends_on": depends_on}
            runs.append(
                PlannedRun(
                    name=f"{folder}/k{k}_{lang}_seed{common['seed']}",
                    k=k,
                    languages=[lang],
                    overrides=overrides,
                    **common,
                    **extra,
                )
            )
    return runs


def zero_shot(
    folder: str, languages: Sequence[str], overrides: list[str], common: dict[str, Any]
) -> PlannedRun:
    """The k = 0 run of a (method, grid point, schedule, seed): every language at once."""
    return PlannedRun(
        name=f"{folder}/k0_all_seed{common['seed']}",
        k=0,
        languages=list(languages),
        overrides=[*overrides, "data.k=0"],
        **common,
    )


def check_stage1_from(
    stage1_from: dict[str, str], methods: Sequence[str], schedules: Sequence[str], grid: dict
) -> None:
    """``sweep.stage1_from``: finished runs, of swept methods, for a two-stage schedule."""
    if not stage1_from:
        return
    if "two_stage" not in schedules:
        raise ConfigError(
            "sweep.stage1_from gives source-trained runs for the two-stage schedule, but "
            f"sweep.schedules={list(schedules)}; add two_stage, e.g. sweep.schedules=[two_stage]."
        )
    # A one-point grid is allowed: it labels the rows (e.g. the setting the given run
    # was trained with) and sets that value in the stage-2 runs too.
    several = [key for key, values in grid.items() if len(values) > 1]
    if several:
        raise ConfigError(
            "sweep.stage1_from gives one source-trained run per method, which cannot stand for "
            f"every point of sweep.grid ({', '.join(several)}); sweep the grid without "
            "stage1_from, or give each grid point its own sweep."
        )
    known = list(methods) or ["configured"]
    for method, run_dir in stage1_from.items():
        if method not in known:
            raise ConfigError(
                f"sweep.stage1_from names method {method!r}, which is not in sweep.methods "
                f"({', '.join(known)}); key each run by the method it was trained with."
            )
        if not RunFolder.finished_at(run_dir) or not (Path(run_dir) / "checkpoint").is_dir():
            raise ConfigError(
                f"sweep.stage1_from.{method}={run_dir} is not a finished training run (expected "
                "a folder with metrics.json and checkpoint/, as `lowres train` leaves it); "
                "train the source run first or fix the path."
            )


def plan_from_spec(
    spec: dict[str, Any],
    languages: Sequence[str],
    sweep_dir: Path,
    config: Any = None,
    config_dirs: Sequence[Path] = (),
) -> SweepPlan:
    """:func:`plan_sweep` from the ``sweep`` config node, as a plain dict.

    ``config`` (the sweep's composed config) lets the grid's keys be checked against it;
    ``config_dirs`` are the user's config folders (``hydra.searchpath``) with their presets.
    """
    if config is not None:
        check_grid_keys(spec["grid"], config, config_dirs)
    return plan_sweep(
        k_values=spec["k"],
        seeds=spec["seeds"],
        languages=languages,
        methods=spec["methods"],
        grid=spec["grid"],
        schedules=spec["schedules"],
        stage1=spec["stage1"],
        stage2=spec["stage2"],
        stage1_once=spec["stage1_once"],
        stage1_from=spec.get("stage1_from", {}),
        sweep_dir=sweep_dir,
        config_dirs=config_dirs,
    )


def write_plan(sweep_dir: Path, plan: SweepPlan, extra: dict[str, Any]) -> None:
    RunFolder(sweep_dir).write_json(
        SWEEP_FILE, {**extra, "runs": [asdict(run) for run in plan.runs]}
    )


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_FILE
    if not Path(sweep_dir).is_dir():
        raise LowresError(
            f"The sweep folder {sweep_dir} does not exist; give the folder `lowres sweep` "
            "printed (its hydra.sweep.dir), e.g. outputs/sweeps/xquad/<date>."
        )
    if not path.is_file():
        raise LowresError(
            f"{sweep_dir} holds no {SWEEP_FILE} (nor the multirun.yaml of a `lowres train -m` "
            "folder); it is not a lowres sweep folder. Give the folder `lowres sweep` or "
            "`lowres train -m` wrote (its hydra.sweep.dir), or run the sweep first."
        )
    data = read_json(
        path, f"the {SWEEP_FILE} `lowres sweep` writes", "rerun the sweep to rewrite it."
    )
    _check_sweep_record(path, data)
    return data


# What lowres report reads of sweep.json, and the type each must have.
_SWEEP_TYPES = {"task": str, "planned": int, "sweep": dict, "runs": list}
_RUN_TYPES = {
    "name": str, "method": str, "schedule": str, "grid": dict, "k": int, "seed": int,
    "stage": int,
}  # fmt: skip


def _check_sweep_record(path: Path, data: Any) -> None:
    """A hand-edited or damaged sweep.json is named with the key at fault, not a KeyError."""

    def wrong(where: str, what: str) -> DataFormatError:
        return DataFormatError(
            f"{path}: {where} {what}. Expected the {SWEEP_FILE} `lowres sweep` writes; rerun "
            "the sweep to rewrite it."
        )

    if not isinstance(data, dict):
        raise wrong("the file", f"holds a JSON {type(data).__name__}, not an object")
    if "runs" not in data:
        raise wrong("the file", "has no 'runs' list")
    for key, kind in _SWEEP_TYPES.items():
        if key in data and not _is(data[key], kind):
            raise wrong(repr(key), f"is {data[key]!r:.60}, not a {kind.__name__}")
    design = data.get("sweep", {})
    for key in ("k", "schedules"):
        if key in design and not isinstance(design[key], list):
            raise wrong(f"'sweep.{key}'", f"is {design[key]!r:.60}, not a list")
    for number, run in enumerate(data["runs"]):
        if not isinstance(run, dict):
            raise wrong(f"runs[{number}]", f"is {run!r:.60}, not an object")
        for key, kind in _RUN_TYPES.items():
            if not _is(run.get(key), kind):
                raise wrong(
                    f"runs[{number}].{key}", f"is {run.get(key)!r:.60}, not a {kind.__name__}"
                )


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))
