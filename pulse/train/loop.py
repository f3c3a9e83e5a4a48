"""The training loop: one recipe in, a run directory out.

Per optimiser step: every micro-batch of this rank runs forward and backward (DDP
syncs gradients on the last), the loss is the mean over the whole global batch's
targets, the global gradient norm is clipped, AdamW steps, the schedule advances.
Batches are a function of the step, so the step is the data position and a resumed
run is bit-identical to an uninterrupted one on CPU. Ctrl-C or SIGTERM ends the run after
the step in flight with a checkpoint (pulse.train.stop).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pulse.assemble import build_model
from pulse.contract import count_params
from pulse.errors import PulseError
from pulse.evaluation.evaluate import evaluate
from pulse.runtime import ddp
from pulse.runtime.device import autocast, reduce_sums, to_device
from pulse.storage.rundir import RunDir
from pulse.storage.state import MetricsLog, optimizer_state, param_names, rng_state, seed_everything
from pulse.tasks import TokenizedTask, task_of
from pulse.tasks.base import PreparesData, Task
from pulse.train import faults
from pulse.train.init import check_tokenizer, init_weights, read_record, write_record
from pulse.train.optim import make_optimizer, make_scheduler
from pulse.train.plots import plot_run
from pulse.train.result import Reporter, RunResult, TaskModule
from pulse.train.slow_steps import SlowSteps
from pulse.train.stop import Stopped, StopRequest, on_signals, signal_name


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

    The policy is pulse.storage.rundir's: the same recipe continues; resume=True insists on
    a checkpoint and applies changed [train] settings (model and task must match);
    force=True moves a run already in `out_dir` aside first; anything else is refused.
    Only one process writes a run directory at a time.
    SIGINT (Ctrl-C) and SIGTERM stop it after the step in flight with a checkpoint and raise
    `Stopped` (a KeyboardInterrupt) saying how to continue; a second signal stops at once.
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
        with on_signals(announce=d.main) as stop:
            return _train(recipe, run, resume, force, reporter if d.main else None, d, allow_unverified, stop)
    except OSError as err:
        if full_disk(err):
            raise PulseError(f"no space left on the device while writing {run.root}; every checkpoint already "
                             "written is intact. Free some space and rerun with --resume.") from None
        raise
    finally:
        run.release()
        ddp.teardown(d)


def _train(recipe: Any, run: RunDir, resume: bool, force: bool, reporter: Reporter | None, d: ddp.Dist,
           allow_unverified: bool = False, stop: StopRequest | None = None) -> RunResult:
    """A run in three stages: build (or resume) it, loop over the steps, finish (final eval, weights, summary)."""
    if recipe.train.threads:  # an explicit choice: pulse.threads stops adapting
        from pulse import threads

        threads.use(recipe.train.threads)
    say = reporter.message if reporter is not None else (lambda text: None)
    if force:
        run.replace(say)
    ddp.barrier(d)
    point = run.prepare(recipe, resume=resume, say=say)
    run.clean_partial()
    session = _build(recipe, run, point, d, reporter, say, allow_unverified)
    stop = stop or StopRequest(announce=False)
    stopped, last_train, last_eval = _loop(session, stop)
    if stopped == "signal":
        raise _stop_here(session, stop)
    return _finish(session, stopped, last_train, last_eval)


def _stop_here(s: _Session, stop: StopRequest) -> Stopped:
    """The checkpoint at a stop signal (unless the newest one is of this step already), and what to say."""
    path = s.run.step_dir(s.step) if s.saved == s.step else s.save()  # the same decision on every rank
    close = getattr(s.reporter, "close", None)
    if close is not None:
        close()
    return Stopped(f"{signal_name(stop.signum)} received: stopped after step {s.step} of {s.spec.steps} and saved "
                   f"the weights and the full training state in {path}. Run the same command again to continue "
                   f"exactly from there (`pulse train {s.run.root}` continues this run too).", stop.signum)


@dataclass
class _Session:
    """One run between its stages: what `_build` makes, `_loop` advances and `_finish` closes."""

    recipe: Any
    run: RunDir
    d: ddp.Dist
    reporter: Reporter | None
    say: Callable[[str], None]
    task: Task
    model: nn.Module
    head: nn.Module | None
    module: TaskModule
    optimizer: torch.optim.Optimizer
    scheduler: Any
    tokenizer: Any
    log: MetricsLog
    resumed: Any = None  # the checkpoint this run continues, if any
    started: dict[str, Any] | None = None  # where fine-tuning weights came from (train.init_from)
    step: int = 0
    saved: int | None = None  # the step of the newest checkpoint this run holds
    tokens: int = 0
    elapsed0: float = 0.0  # seconds spent before this process (a resumed run's)
    clock0: float = field(default_factory=time.perf_counter)
    names: dict[int, str] = field(default_factory=dict)

    @property
    def spec(self) -> Any:
        return self.recipe.train

    def elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.clock0

    def evaluate(self) -> dict[str, float]:
        spec = self.spec
        metrics = evaluate(self.task, self.model, self.head, batch_size=spec.eval_batch_size or spec.batch_size,
                           device=self.d.device, precision=spec.precision, dist=self.d)
        record = {"split": "eval", "step": self.step, "time": self.elapsed(), **metrics}
        self.log.write(record)
        if self.reporter is not None:
            self.reporter.eval(record)
        return metrics

    def save(self) -> Path:
        # batches are a function of the step, so the data position is the number of global batches drawn
        state = {"step": self.step, "data_position": self.step, "tokens": self.tokens, "elapsed": self.elapsed(),
                 "optimizer": optimizer_state(self.optimizer, self.names), "rng": rng_state(), "world": self.d.world}
        path = self.run.save(self.step, model=self.model, head=self.head, recipe=self.recipe, state=state,
                             keep_last=self.spec.keep_last, tokenizer=self.tokenizer)
        self.saved = self.step
        ddp.barrier(self.d)
        return path


def _build(recipe: Any, run: RunDir, point: Any, d: ddp.Dist, reporter: Reporter | None,
           say: Callable[[str], None], allow_unverified: bool) -> _Session:
    """The task, model, head, optimiser and schedule, from the checkpoint `point` when resuming, from
    train.init_from when fine-tuning; the run directory marked and the metrics log reopened."""
    spec = recipe.train
    # the task, with the tokenizer resolved once (pulse.data.tokenizer) where it reads text; the checkpoints save
    # that tokenizer, and a resumed run's weights must have been trained with the same one
    task = task_of(recipe)
    tokenizer = task.tokenizer if isinstance(task, TokenizedTask) else None
    if point is not None:
        check_tokenizer(point.path, tokenizer)
    seed_everything(spec.seed)
    model = build_model(recipe, device=d.device)
    task.check_model(model)
    _prepare_data(task, d, say)
    head = task.make_head(model, device=d.device)
    module = TaskModule(task, model, head)
    optimizer = make_optimizer(module, spec)
    scheduler = make_scheduler(optimizer, spec)
    if point is not None:
        point.apply(model=model, head=head, module=module, optimizer=optimizer, scheduler=scheduler)
    started = None
    if spec.init_from is not None:  # fine-tuning: a fresh run starts from those weights, a resumed one keeps its own
        started = read_record(run.root) if point else init_weights(
            model, head, spec.init_from, say=say, tokenizer=tokenizer, allow_unverified=allow_unverified
        )
        if d.main and not point:
            run.root.mkdir(parents=True, exist_ok=True)
            write_record(run.root, started)
    session = _Session(recipe, run, d, reporter, say, task, model, head, module, optimizer, scheduler, tokenizer,
                       MetricsLog(run.metrics_path, writer=d.main), resumed=point, started=started,
                       step=point.step if point else 0, saved=point.step if point else None,
                       tokens=point.tokens if point else 0,
                       elapsed0=point.elapsed if point else 0.0, names=param_names(module))
    if d.main:
        run.root.mkdir(parents=True, exist_ok=True)
        run.mark(recipe)
        session.log.restart(session.step)
    ddp.barrier(d)
    if reporter is not None:
        reporter.start({
            "recipe": recipe.source, "model": recipe.model.kind, "params": count_params(module), "task": task.kind,
            "metric": task.metric, "steps": spec.steps, "batch_size": spec.batch_size, "device": str(d.device),
            "world": d.world, "out_dir": str(run.root), "resumed_from": point.step if point else None,
            "init_from": started, "max_time": spec.max_time, "elapsed": session.elapsed0,
        })
    return session


def _prepare_data(task: Task, d: ddp.Dist, say: Callable[[str], None]) -> None:
    """A corpus is tokenized once (rank 0 first; the others then find it whole)."""
    if not isinstance(task, PreparesData):
        return
    if d.main:
        from pulse.data.corpus import progress_lines

        corpus = task.prepare(say=say, progress=progress_lines(say))
        if not corpus.reused:
            say(f"tokenized the corpus once into {corpus.root} (reused by later runs)")
    ddp.barrier(d)
    task.prepare()


@dataclass
class _Window:
    """The training statistics since the last log line."""

    sums: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    tokens: int = 0

    def add(self, sums: dict[str, float], tokens: int, seconds: float) -> None:
        for k, v in sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.tokens += tokens
        self.seconds += seconds

    def rate(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def flush(self, s: _Session, lr: float, norm: float) -> dict[str, float]:
        """Write the window's log line and start a new window; returns its metrics."""
        metrics = s.task.metrics(self.sums)
        s.log.write({"split": "train", "step": s.step, "time": s.elapsed(), "lr": lr, "grad_norm": norm,
                     "tokens": s.tokens, "tokens_per_s": self.rate(), **metrics})
        self.sums, self.seconds, self.tokens = {}, 0.0, 0
        return metrics


def _loop(s: _Session, stop: StopRequest) -> tuple[str, dict[str, float], dict[str, float]]:
    """Optimiser steps until train.steps, train.max_time or a stop signal, with log lines, evals and checkpoints
    on their schedules. Returns how it stopped ("signal" included) and the last train and eval metrics."""
    spec = s.spec
    wrapped = ddp.wrap(s.module, s.d, find_unused=s.head is not None)
    params = [p for p in s.module.parameters() if p.requires_grad]
    time_spent = spec.max_time is not None and s.elapsed0 >= spec.max_time
    stopped = "already complete" if s.step >= spec.steps or time_spent else "done"
    window, last_train, last_eval = _Window(), {}, {}
    injected, signalled_at = faults.injected_step(s.run.root), faults.signal_step(s.d.rank)

    slow = SlowSteps(spec.threads)
    while s.step < spec.steps and not time_spent:
        t0 = time.perf_counter()
        sums, step_tokens, lr, norm = _optimizer_step(s, wrapped, params, injected)
        faults.send_signal_at(s.step, signalled_at)
        seconds = time.perf_counter() - t0
        window.add(sums, step_tokens, seconds)
        noticed = slow(seconds)
        if noticed:
            s.say(noticed)
        if s.reporter is not None:
            metrics = s.task.metrics(sums)
            s.reporter.step(s.step, {"loss": metrics["loss"], s.task.metric: metrics[s.task.metric],
                                     "tokens_per_s": window.rate()})
        if s.step % spec.log_every == 0 or s.step == spec.steps:
            last_train = window.flush(s, lr, norm)
        time_spent, signalled = _agree(s, stop)
        if time_spent and s.step < spec.steps:
            stopped = "time limit"
            s.say(f"time budget of {spec.max_time:g} s reached at step {s.step}; finishing up")
        finishing = s.step == spec.steps or time_spent
        if spec.eval_every and s.step % spec.eval_every == 0 and not finishing:
            last_eval = s.evaluate()
        if spec.checkpoint_every and s.step % spec.checkpoint_every == 0 and not finishing:
            s.save()
        if signalled and not finishing:  # this step's eval and checkpoint are done, as in an uninterrupted run
            return "signal", last_train, last_eval
    return stopped, last_train, last_eval


def _agree(s: _Session, stop: StopRequest) -> tuple[bool, bool]:
    """Whether train.max_time is spent and whether a stop signal came, the same on every rank: one rank's
    yes is everyone's, after the same step (a rank that got no signal takes the others')."""
    over = s.spec.max_time is not None and s.elapsed() >= s.spec.max_time
    if not s.d.active:
        return over, stop.requested
    mine = [float(over), float(stop.requested), float(stop.signum or 0)]
    over_n, stops, signums = ddp.all_sum(torch.tensor(mine, dtype=torch.float64, device=s.d.device), s.d).tolist()
    if stops and not stop.requested:
        stop(round(signums / stops))
    return over_n > 0, stops > 0


def _optimizer_step(s: _Session, wrapped: nn.Module, params: list[Tensor],
                    injected: int | None) -> tuple[dict[str, float], int, float, float]:
    """One step: forward and backward, the non-finite checks, clipping, AdamW and the schedule.
    Returns the step's sums, its tokens, the learning rate it used and the gradient norm."""
    spec = s.spec
    sums, step_tokens = _step(s.task, wrapped, s.recipe, s.step, s.d)
    loss = faults.loss_at(sums["loss_sum"] / max(sums["count"], 1.0), s.step + 1, injected)
    if not math.isfinite(loss):
        raise _non_finite("training loss", loss, s.step + 1, s.run)
    norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip if spec.grad_clip > 0 else math.inf)
    if not torch.isfinite(norm):
        raise _non_finite("gradient norm", float(norm), s.step + 1, s.run)
    lr = s.optimizer.param_groups[0]["lr"]
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.step += 1
    s.tokens += step_tokens
    return sums, step_tokens, lr, float(norm)


def _finish(s: _Session, stopped: str, last_train: dict[str, float], last_eval: dict[str, float]) -> RunResult:
    """The final eval and checkpoint (unless the run was complete already), the final weights, the plots
    and summary.json."""
    run = s.run
    if stopped != "already complete" or not run.complete():
        last_eval = s.evaluate()
        checkpoint = s.save()
    else:
        checkpoint = run.complete()[-1][1]
        last_eval = _last_record(run, "eval") or s.evaluate()
        last_train = _last_record(run, "train")
    run.save_final(model=s.model, head=s.head, recipe=s.recipe, tokenizer=s.tokenizer)
    plots = plot_run(run.root, s.task.metric) if s.d.main else []
    result = RunResult(
        out_dir=run.root, step=s.step, steps=s.spec.steps, elapsed=s.elapsed(), tokens=s.tokens,
        params=count_params(s.module), metric=s.task.metric, higher_is_better=s.task.higher_is_better,
        train=last_train, eval=last_eval, stopped=stopped, resumed_from=s.resumed.step if s.resumed else None,
        checkpoint=checkpoint, plots=plots, init_from=s.started,
    )
    run.write_summary(result.to_dict())
    ddp.barrier(s.d)
    if s.reporter is not None:
        s.reporter.finish(result)
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
    from pulse.storage.state import read_metrics

    records = [r for r in read_metrics(run.metrics_path) if r.get("split") == split]
    if not records:
        return {}
    return {k: v for k, v in records[-1].items() if k not in ("split", "step", "time")}
