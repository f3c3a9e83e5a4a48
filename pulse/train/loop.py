"""The training loop: one recipe in, a run directory out.

Per optimiser step: every micro-batch of this rank runs forward and backward (DDP
syncs gradients on the last), the loss is the mean over the whole global batch's
targets, the global gradient norm is clipped, AdamW steps, the schedule advances.
Batches are a function of the step, so the step is the data position and a resumed
run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pulse.assemble import build_model
from pulse.contract import count_params
from pulse.errors import PulseError
from pulse.tasks import build_task
from pulse.tasks.base import Batch, Sums, Task
from pulse.train import ddp, faults
from pulse.train.evaluate import autocast, evaluate, reduce_sums, to_device
from pulse.train.init import check_tokenizer, init_weights, read_record, write_record
from pulse.train.optim import make_optimizer, make_scheduler
from pulse.train.plots import plot_run
from pulse.train.rundir import RunDir
from pulse.train.state import MetricsLog, optimizer_state, param_names, rng_state, seed_everything


class TaskModule(nn.Module):
    """The model and the task head as one module, whose forward is the task's statistics (what DDP wraps)."""

    def __init__(self, task: Task, model: nn.Module, head: nn.Module | None):
        super().__init__()
        self.task = task
        self.model = model
        self.head = head

    def forward(self, batch: Batch) -> Sums:
        return self.task.forward(self.model, self.head, batch)


class Reporter(Protocol):
    """What the loop tells the outside world (rank 0 only); see pulse.train.progress for the rich one."""

    def start(self, info: dict[str, Any]) -> None: ...

    def step(self, step: int, values: dict[str, float]) -> None: ...

    def eval(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...

    def finish(self, result: RunResult) -> None: ...


@dataclass
class RunResult:
    out_dir: Path
    step: int
    steps: int
    elapsed: float
    tokens: int
    params: int
    metric: str
    higher_is_better: bool
    train: dict[str, float]
    eval: dict[str, float]
    stopped: str  # "done", "time limit" or "already complete"
    resumed_from: int | None = None
    checkpoint: Path | None = None
    plots: list[Path] = field(default_factory=list)
    init_from: dict[str, Any] | None = None  # where the weights started (train.init_from), see pulse.train.init

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "step": self.step, "steps": self.steps, "elapsed_s": self.elapsed,
            "tokens": self.tokens, "params": self.params, "metric": self.metric,
            "higher_is_better": self.higher_is_better, "train": self.train, "eval": self.eval,
            "stopped": self.stopped, "resumed_from": self.resumed_from,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None, "plots": [str(p) for p in self.plots],
            "init_from": self.init_from,
        }


def _non_finite(what: str, value: float, step: int, run: RunDir) -> PulseError:
    complete = run.complete()
    fixes = "Lower train.lr, add train.warmup_steps or set train.grad_clip"
    if not complete:
        return PulseError(
            f"the {what} became {value} at step {step}; training stopped before applying that step, and no "
            f"checkpoint had been written yet, so there is nothing to resume. {fixes}, then start afresh with "
            f"--force (it moves {run.root} aside) or give another --out."
        )
    return PulseError(
        f"the {what} became {value} at step {step}; training stopped before applying that step, and the newest "
        f"checkpoint, {complete[-1][1]} (step {complete[-1][0]}), is intact. {fixes}, then rerun with --resume: "
        "it continues from that checkpoint with the new settings applied. If its weights had already diverged "
        "(the train loss rose steeply before the stop), the run stops again; then start afresh with --force."
    )


def train(recipe: Any, out_dir: str | Path, *, resume: bool = False, force: bool = False,
          reporter: Reporter | None = None, allow_unverified: bool = False) -> RunResult:
    """Train `recipe` into `out_dir`, continuing exactly from the newest checkpoint found there.

    The policy is pulse.train.rundir's: the same recipe continues; resume=True insists on
    a checkpoint and applies changed [train] settings (model and task must match);
    force=True moves a run already in `out_dir` aside first; anything else is refused.
    Only one process writes a run directory at a time.
    train.init_from starts a fresh run from another run's weights (fine-tuning); allow_unverified=True
    accepts init weights that lack their checksum or recipe hash.
    """
    from pulse.paths import full_disk

    if recipe.task is None:
        raise PulseError(
            "the recipe has no [task] table; add one, e.g. [task] kind = \"mqar\" (see `pulse list --role task`)."
        )
    d = ddp.setup(recipe.train.device)
    run = RunDir(out_dir, writer=d.main)
    try:
        run.acquire()
        return _train(recipe, run, resume, force, reporter if d.main else None, d, allow_unverified)
    except OSError as err:
        if full_disk(err):
            raise PulseError(f"no space left on the device while writing {run.root}; every checkpoint already "
                             "written is intact. Free some space and rerun with --resume.") from None
        raise
    finally:
        run.release()
        ddp.teardown(d)


def _train(recipe: Any, run: RunDir, resume: bool, force: bool, reporter: Reporter | None, d: ddp.Dist,
           allow_unverified: bool = False) -> RunResult:
    spec = recipe.train
    if spec.threads:
        torch.set_num_threads(spec.threads)
    say = reporter.message if reporter is not None else (lambda text: None)
    if force:
        run.replace(say)
    ddp.barrier(d)
    point = run.prepare(recipe, resume=resume, say=say)
    run.clean_partial()

    task = build_task(recipe.task)
    seed_everything(spec.seed)
    model = build_model(recipe, device=d.device)
    task.check_model(model)
    tokenizer = getattr(task, "tokenizer", None)
    if point is not None:
        check_tokenizer(point.path, tokenizer)
    if hasattr(task, "prepare"):  # a corpus is tokenized once (rank 0 first; the others then find it whole)
        if d.main:
            from pulse.data.corpus import progress_lines

            corpus = task.prepare(say=say, progress=progress_lines(say))
            if not corpus.reused:
                say(f"tokenized the corpus once into {corpus.root} (reused by later runs)")
        ddp.barrier(d)
        task.prepare()
    head = task.make_head(model, device=d.device)
    module = TaskModule(task, model, head)
    optimizer = make_optimizer(module, spec)
    scheduler = make_scheduler(optimizer, spec)
    if point is not None:
        point.apply(model=model, head=head, module=module, optimizer=optimizer, scheduler=scheduler)
    resumed = point
    names = param_names(module)
    started = None
    if spec.init_from is not None:  # fine-tuning: a fresh run starts from those weights, a resumed one keeps its own
        started = read_record(run.root) if resumed else init_weights(
            model, head, spec.init_from, say=say, tokenizer=tokenizer, allow_unverified=allow_unverified
        )
        if d.main and not resumed:
            run.root.mkdir(parents=True, exist_ok=True)
            write_record(run.root, started)
    step = resumed.step if resumed else 0
    tokens = resumed.tokens if resumed else 0
    elapsed0 = resumed.elapsed if resumed else 0.0
    log = MetricsLog(run.metrics_path, writer=d.main)
    if d.main:
        run.root.mkdir(parents=True, exist_ok=True)
        run.mark(recipe)
        log.restart(step)
    ddp.barrier(d)

    wrapped = ddp.wrap(module, d, find_unused=head is not None)
    params = [p for p in module.parameters() if p.requires_grad]
    eval_size = spec.eval_batch_size or spec.batch_size
    clock0 = time.perf_counter()

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - clock0

    if reporter is not None:
        reporter.start({
            "recipe": recipe.source, "model": recipe.model.kind, "params": count_params(module), "task": task.kind,
            "metric": task.metric, "steps": spec.steps, "batch_size": spec.batch_size, "device": str(d.device),
            "world": d.world, "out_dir": str(run.root), "resumed_from": resumed.step if resumed else None,
            "init_from": started, "max_time": spec.max_time, "elapsed": elapsed0,
        })

    def do_eval(at: int) -> dict[str, float]:
        metrics = evaluate(task, model, head, batch_size=eval_size, device=d.device, precision=spec.precision, dist=d)
        record = {"split": "eval", "step": at, "time": elapsed(), **metrics}
        log.write(record)
        if reporter is not None:
            reporter.eval(record)
        return metrics

    def save(at: int) -> Path:
        # batches are a function of the step, so the data position is the number of global batches drawn
        state = {"step": at, "data_position": at, "tokens": tokens, "elapsed": elapsed(),
                 "optimizer": optimizer_state(optimizer, names), "rng": rng_state(), "world": d.world}
        path = run.save(at, model=model, head=head, recipe=recipe, state=state, keep_last=spec.keep_last,
                        tokenizer=tokenizer)
        ddp.barrier(d)
        return path

    time_spent = spec.max_time is not None and elapsed0 >= spec.max_time
    stopped = "already complete" if step >= spec.steps or time_spent else "done"
    window: dict[str, float] = {}
    window_time, window_tokens, last_train, last_eval = 0.0, 0, {}, {}
    injected = faults.injected_step(run.root)
    from pulse.train.progress import SlowSteps  # progress imports this module's RunResult

    slow = SlowSteps(spec.threads)
    while step < spec.steps and not time_spent:
        t0 = time.perf_counter()
        sums, step_tokens = _step(task, wrapped, recipe, step, d)
        loss = faults.loss_at(sums["loss_sum"] / max(sums["count"], 1.0), step + 1, injected)
        if not math.isfinite(loss):
            raise _non_finite("training loss", loss, step + 1, run)
        norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip if spec.grad_clip > 0 else math.inf)
        if not torch.isfinite(norm):
            raise _non_finite("gradient norm", float(norm), step + 1, run)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += step_tokens
        window_time += time.perf_counter() - t0
        noticed = slow(time.perf_counter() - t0)
        if noticed:
            say(noticed)
        window_tokens += step_tokens
        for k, v in sums.items():
            window[k] = window.get(k, 0.0) + v
        metrics = task.metrics(sums)
        if reporter is not None:
            reporter.step(step, {"loss": metrics["loss"], task.metric: metrics[task.metric],
                                 "tokens_per_s": window_tokens / max(window_time, 1e-9)})
        if step % spec.log_every == 0 or step == spec.steps:
            last_train = task.metrics(window)
            log.write({"split": "train", "step": step, "time": elapsed(), "lr": lr, "grad_norm": float(norm),
                       "tokens": tokens, "tokens_per_s": window_tokens / max(window_time, 1e-9), **last_train})
            window, window_time, window_tokens = {}, 0.0, 0
        if spec.max_time is not None:
            over = torch.tensor([float(elapsed() >= spec.max_time)], device=d.device)
            time_spent = bool(ddp.all_sum(over, d).item() > 0)
            if time_spent and step < spec.steps:
                stopped = "time limit"
                say(f"time budget of {spec.max_time:g} s reached at step {step}; finishing up")
        finishing = step == spec.steps or time_spent
        if spec.eval_every and step % spec.eval_every == 0 and not finishing:
            last_eval = do_eval(step)
        if spec.checkpoint_every and step % spec.checkpoint_every == 0 and not finishing:
            save(step)

    if stopped != "already complete" or not run.complete():
        last_eval = do_eval(step)
        checkpoint = save(step)
    else:
        checkpoint = run.complete()[-1][1]
        last_eval = _last_record(run, "eval") or do_eval(step)
        last_train = _last_record(run, "train")
    run.save_final(model=model, head=head, recipe=recipe, tokenizer=tokenizer)
    plots = plot_run(run.root, task.metric) if d.main else []
    result = RunResult(
        out_dir=run.root, step=step, steps=spec.steps, elapsed=elapsed(), tokens=tokens, params=count_params(module),
        metric=task.metric, higher_is_better=task.higher_is_better, train=last_train, eval=last_eval, stopped=stopped,
        resumed_from=resumed.step if resumed else None, checkpoint=checkpoint, plots=plots, init_from=started,
    )
    run.write_summary(result.to_dict())
    ddp.barrier(d)
    if reporter is not None:
        reporter.finish(result)
    return result


def _step(task: Task, wrapped: nn.Module, recipe: Any, step: int, d: ddp.Dist) -> tuple[dict[str, float], int]:
    """Forward and backward over this rank's micro-batches; returns the global sums and tokens."""
    spec = recipe.train
    batches = [task.train_batch(step, batch_size=spec.batch_size, seed=spec.seed, micro=m, accum=spec.grad_accum,
                                rank=d.rank, world=d.world) for m in range(spec.grad_accum)]
    local = torch.tensor([float(sum(task.targets(b) for b in batches)), float(sum(task.tokens(b) for b in batches))],
                         dtype=torch.float64, device=d.device)
    total_targets, total_tokens = ddp.all_sum(local, d).tolist()
    # DDP averages gradients over ranks, so each rank's share of the global mean is scaled by world
    scale = d.world / max(total_targets, 1.0)
    sums: dict[str, Tensor | float] = {}
    for m, batch in enumerate(batches):
        sync = m == len(batches) - 1 or not d.active
        with contextlib.nullcontext() if sync else wrapped.no_sync():
            with autocast(d.device, spec.precision):
                out = wrapped(to_device(batch, d.device))
            (out["loss_sum"] * scale).backward()
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    return reduce_sums(sums, d, d.device), int(total_tokens)


def _last_record(run: RunDir, split: str) -> dict[str, float]:
    from pulse.train.state import read_metrics

    records = [r for r in read_metrics(run.metrics_path) if r.get("split") == split]
    if not records:
        return {}
    return {k: v for k, v in records[-1].items() if k not in ("split", "step", "time")}
