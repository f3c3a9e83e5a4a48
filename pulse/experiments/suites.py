"""Benchmark suites: one model recipe trained and scored on every task of a suite, beside a baseline.

    pulse benchmark recipes/lra-image-pulse.toml --task lra --vs recipes/lra-image-transformer.toml

A suite (`lra`, `babi`) is a list of task tables at the published sizes (the LRA paper's sequence
lengths; bAbI's generated tasks 1, 2, 3, 6 and 15) with a step count each at budget 1. For every
recipe and task the recipe's [model] is refitted to the task (`task.fit_model`: vocabulary, input
and output widths), its [task] replaced, its [train] kept but for the steps, the batch size and
the learning rate (each of `lrs`: the best one per task is reported, as every quality claim here
is the best of a small sweep). Each (recipe, task, lr) trains into its own run directory with the
ordinary training loop, so a rerun skips finished runs and resumes unfinished ones exactly, as
`pulse sweep` does. A task that reads local files (LRA Text) runs only when its data is given
(`data={"text": PATH}`); otherwise its row says so.

`budget` scales the work: the training examples (the suite's steps × batch × budget, as that many
steps of the suite's batch, or one smaller batch when the budget buys less than one) and, below
`WHOLE_EVAL_FROM`, the held-out examples scored (in proportion, at least `MIN_EVAL`; the run
directory's name then says how many, e.g. `lr=0.001,eval=10`). Everything is checked before the
first step (`plan`: every recipe, option, task's data and run directory), and the time each run
will take is projected from one measured example (pulse.experiments.suites_time).

`--set` applies to every run; `--set NAME.task.x=v` (NAME a suite task) only to that task's.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulse.errors import PulseError, did_you_mean
from pulse.experiments.sweep import Point, finished, run_inline
from pulse.experiments.sweep_workers import resume_point

WHOLE_EVAL_FROM = 0.1  # from this budget up every held-out set is scored whole (the tables in docs/benchmarks.md)
MIN_EVAL = 8


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: its [task] table, its steps at budget 1, and where local data goes."""

    name: str
    task: dict[str, Any]
    steps: int
    batch_size: int = 32
    data_field: str | None = None  # the task field a --data NAME=PATH sets
    needs_data: bool = False  # no generator: skipped unless --data names the files
    eval_field: str = "num_test"  # the task field that caps the held-out examples scored
    eval_size: int = 1000  # held-out examples scored at budgets from WHOLE_EVAL_FROM up (the default)
    data_eval_field: str | None = None  # the field that caps them when --data gives files (None: eval_field)


def _lra() -> tuple[SuiteTask, ...]:
    # the LRA paper's lengths (Tay et al. 2021, table 1): ListOps 2K, Text 4K, Retrieval 4K per document,
    # Image 1K (32×32), Pathfinder 1K (32×32)
    return (
        SuiteTask("listops", {"kind": "listops", "min_len": 500, "max_len": 2000}, 2000),
        SuiteTask("text", {"kind": "lra_text", "max_len": 4000}, 2000, data_field="path", needs_data=True,
                  eval_field="eval_examples", eval_size=25_000),  # IMDb's test split
        SuiteTask("retrieval", {"kind": "lra_retrieval", "max_len": 4000}, 2000, batch_size=16, data_field="path",
                  data_eval_field="eval_examples"),
        SuiteTask("image", {"kind": "lra_image"}, 3000, data_field="path"),
        SuiteTask("pathfinder", {"kind": "pathfinder", "resolution": 32}, 3000),
    )


def _babi() -> tuple[SuiteTask, ...]:
    return tuple(SuiteTask(f"qa{n}", {"kind": "babi", "task_id": n}, 2000, data_field="path") for n in (1, 2, 3, 6, 15))


SUITES: dict[str, Callable[[], tuple[SuiteTask, ...]]] = {"lra": _lra, "babi": _babi}


def suite(name: str) -> tuple[SuiteTask, ...]:
    if name not in SUITES:
        raise PulseError(f"--task {name}: no such benchmark suite{did_you_mean(name, SUITES)}; the suites are "
                         f"{', '.join(SUITES)}.")
    return SUITES[name]()


@dataclass
class Cell:
    """One (system, task): its runs, one per learning rate, or why it did not run."""

    system: str
    task: str
    points: list[Point] = field(default_factory=list)
    skipped: str | None = None
    eval_examples: int = 0  # held-out examples each eval scores (where the data decides, the suite's nominal count)


def _scoped(overrides: Sequence[str], names: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """--set values for every run, and those scoped to one suite task (`pathfinder.task.x=v`)."""
    common, scoped = [], {n: [] for n in names}
    for text in overrides:
        head, _, rest = text.partition(".")
        if head in scoped and rest:
            scoped[head].append(rest)
        else:
            common.append(text)
    return common, scoped


def system_name(path: Path, taken: Sequence[str]) -> str:
    name = path.parent.name if path.name in ("model.safetensors", "model.pt") else path.stem or path.name
    base, n = name, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def train_size(entry: SuiteTask, budget: float) -> tuple[int, int]:
    """Steps and batch size at `budget`: the suite's steps × budget at its batch size, or one step of the
    examples the budget buys when that is less than one batch."""
    examples = entry.steps * entry.batch_size * budget
    if examples >= entry.batch_size:
        return max(1, round(entry.steps * budget)), entry.batch_size
    return 1, max(1, math.ceil(examples))


def eval_cap(entry: SuiteTask, budget: float) -> int | None:
    """Held-out examples scored at `budget`: None (the task's own, whole set) from WHOLE_EVAL_FROM up."""
    if budget >= WHOLE_EVAL_FROM:
        return None
    return max(MIN_EVAL, round(entry.eval_size * budget / WHOLE_EVAL_FROM))


def plan(recipes: Sequence[str | Path], suite_name: str, *, budget: float = 1.0, lrs: Sequence[float] = (),
         only: Sequence[str] = (), data: dict[str, str] | None = None, overrides: Sequence[str] = (),
         out: str | Path | None = None) -> tuple[Path, list[Cell]]:
    """Every (recipe, task, lr) run, validated before anything trains — recipe, options, the task's data, the run
    directory; raises PulseError on the first bad one."""
    from pulse.api.source import open_source

    if not (budget > 0 and math.isfinite(budget)):
        raise PulseError(f"--budget {budget}: the budget scales every task's steps and must be above 0, e.g. 0.1.")
    tasks = suite(suite_name)
    names = [t.name for t in tasks]
    for name in [*only, *(data or {})]:
        if name not in names:
            raise PulseError(f"`{name}` is not a task of the {suite_name} suite{did_you_mean(name, names)}; its "
                             f"tasks are {', '.join(names)}.")
    tasks = tuple(t for t in tasks if not only or t.name in only)
    common, scoped = _scoped(overrides, names)
    root = Path(out) if out is not None else Path("runs") / f"benchmark-{suite_name}-{Path(recipes[0]).stem}"
    cells, systems, checked = [], [], set()
    for recipe_path in recipes:
        source = open_source(recipe_path)
        system = system_name(Path(recipe_path), systems)
        systems.append(system)
        base = source.recipe.to_dict()
        for entry in tasks:
            cell = Cell(system, entry.name)
            cells.append(cell)
            table = dict(entry.task)
            given = (data or {}).get(entry.name)
            if given is not None:
                table[entry.data_field or "path"] = str(given)
            elif entry.needs_data:
                cell.skipped = f"needs local data: --data {entry.name}=PATH"
                continue
            cap = eval_cap(entry, budget)
            eval_field = (entry.data_eval_field if given is not None else None) or entry.eval_field
            if cap is not None:
                table[eval_field] = cap
            steps, batch_size = train_size(entry, budget)
            train = {**base.get("train", {}), "steps": steps, "batch_size": entry.batch_size, "max_time": None}
            train["warmup_steps"] = min(train.get("warmup_steps", 0), steps // 5)
            for lr in lrs or [train.get("lr")]:
                recipe = _recipe(base, table, {**train, "lr": lr}, batch_size, [*common, *scoped[entry.name]],
                                 f"{recipe_path} on {suite_name}/{entry.name}", checked)
                scored = getattr(recipe.task, eval_field, None)
                cell.eval_examples = scored or entry.eval_size
                lr_name = f"lr={recipe.train.lr:g}" + (f",eval={scored}" if cap is not None else "")
                point = Point(name=f"{system}/{entry.name}/{lr_name}", values={"train.lr": f"{lr:g}"},
                              recipe=recipe, out_dir=root / system / entry.name / lr_name)
                _check_run_dir(point)
                cell.points.append(point)
    return root, cells


def _recipe(base: dict[str, Any], table: dict[str, Any], train: dict[str, Any], batch_size: int,
            overrides: list[str], described: str, checked: set[str]) -> Any:
    """One run's recipe: the model refitted to the task and checked against it, the budget's batch size (in whole
    micro-batches of train.grad_accum), the device, and the task's data (checked once per task table)."""
    import json

    from pulse.assemble import build_model
    from pulse.runtime.ddp import pick_device
    from pulse.specs.load import recipe_from_dict
    from pulse.tasks import task_of
    from pulse.tasks.base import ChecksData, FitsModel

    settings = {k: v for k, v in train.items() if v is not None}
    data_ = {**base, "task": table, "train": settings}
    recipe = recipe_from_dict(data_, overrides, source=described)
    task = task_of(recipe)
    if isinstance(task, FitsModel):
        data_["model"] = task.fit_model(base["model"])
    accum = recipe.train.grad_accum
    settings["batch_size"] = -(-batch_size // accum) * accum
    recipe = recipe_from_dict(data_, overrides, source=described)
    task.check_model(build_model(recipe, device="meta"))
    try:
        pick_device(recipe.train.device)
        key = json.dumps(recipe.to_dict()["task"], sort_keys=True, default=str)
        if key not in checked and isinstance(task, ChecksData):
            task.check_data()
            checked.add(key)
    except PulseError as err:
        raise PulseError(f"{described}: {err}") from None
    return recipe


def _check_run_dir(point: Point) -> None:
    """The run directory takes this run: empty, or holding this run (finished, or to continue)."""
    from pulse.storage.rundir import RunDir

    if finished(point):
        return
    try:
        RunDir(point.out_dir, writer=False).prepare(point.recipe, resume=resume_point(point), say=lambda text: None)
    except PulseError as err:
        raise PulseError(f"{point.name}: {err} (`pulse benchmark` has no --force: give another --out, or remove "
                         f"{point.out_dir}.)") from None


def run(cells: Sequence[Cell], *, reporter: Callable[[Point], Any] | None = None,
        say: Callable[[str], None] = print) -> dict[str, tuple[str, str | None]]:
    """Train every unfinished run (finished ones are skipped, interrupted ones resume); status per run name."""
    status: dict[str, tuple[str, str | None]] = {}
    for point in (p for c in cells for p in c.points):
        if finished(point):
            status[point.name] = ("skipped", None)
            say(f"{point.name}: finished before, skipped")
            continue
        say(f"{point.name}: training into {point.out_dir}")
        error = run_inline(point, reporter(point) if reporter else None)
        status[point.name] = ("failed", error) if error else ("trained", None)
        say(f"{point.name}: {'failed: ' + error if error else 'trained'}")
    return status


def benchmark(recipes: Sequence[str | Path], suite_name: str, *, budget: float = 1.0, lrs: Sequence[float] = (),
              only: Sequence[str] = (), data: dict[str, str] | None = None, overrides: Sequence[str] = (),
              out: str | Path | None = None, reporter: Callable[[Point], Any] | None = None,
              say: Callable[[str], None] = print, command: str | None = None) -> dict[str, Any]:
    """Plan, train, and write benchmark.json, benchmark.md and benchmark.png into the output directory."""
    from pulse.experiments.suites_report import document, write
    from pulse.experiments.suites_time import project

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    root, cells = plan(recipes, suite_name, budget=budget, lrs=lrs, only=only, data=data, overrides=overrides,
                       out=out)
    projected = project(cells, say)
    status = run(cells, reporter=reporter, say=say)
    command = command or shlex.join(["pulse", "benchmark", str(recipes[0]), "--task", suite_name,
                                     *(a for r in recipes[1:] for a in ("--vs", str(r)))])
    doc = document(cells, status, suite=suite_name, budget=budget, command=command, load=load)
    doc["projected_s"] = projected
    doc["paths"] = [str(p) for p in write(root, doc)]
    return doc


__all__ = ["SUITES", "Cell", "SuiteTask", "benchmark", "plan", "run", "suite"]
