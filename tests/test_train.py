"""Training: run files, exact resume after SIGKILL, DDP equals one process, NaN stops cleanly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pulse
from helpers import run_cli
from pulse.errors import PulseError
from pulse.evaluation import evaluate_checkpoint
from pulse.specs.run import TrainSpec
from pulse.storage.rundir import RunDir
from pulse.storage.state import read_metrics
from pulse.train import faults, train
from pulse.train.optim import lr_factor, make_optimizer, param_categories

PULSE = Path(sys.executable).parent / "pulse"


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def recipe_dict(task: dict | None = None, **train_settings) -> dict:
    return {
        "model": {"kind": "lm", "vocab_size": 32, "dim": 16, "depth": 2, "layout": ["attn"],
                  "mixers": {"attn": {"kind": "attention", "num_heads": 2}}, "positions": {"kind": "rotary"}},
        "task": task or {"kind": "mqar", "vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2, "num_train": 64,
                         "num_test": 32},
        "train": {"steps": 12, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 6,
                  "checkpoint_every": 4, "log_every": 2, "threads": 1, "device": "cpu", **train_settings},
    }


def recipe(**train_settings):
    return pulse.recipe_from_dict(recipe_dict(**train_settings))


def write_recipe(path: Path, data: dict) -> Path:
    def toml(table: dict, prefix: str = "") -> str:
        scalars = "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items() if not isinstance(v, dict))
        head = f"[{prefix}]\n" if prefix and scalars else ""
        nested = "".join(toml(v, f"{prefix}.{k}" if prefix else k) for k, v in table.items() if isinstance(v, dict))
        return head + scalars + nested

    path.write_text(toml(data))
    return path


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


class Interrupt:
    """A reporter that stops the run (like Ctrl-C) after a given step."""

    def __init__(self, at: int):
        self.at = at

    def start(self, info): ...

    def step(self, step, values):
        if step == self.at:
            raise KeyboardInterrupt

    def eval(self, record): ...

    def message(self, text): ...

    def finish(self, result): ...


def test_cli_train_writes_metrics_plots_checkpoints_and_summary(tmp_path):
    path = write_recipe(tmp_path / "tiny.toml", recipe_dict())
    result = run_cli("train", path, "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert "run summary" in result.stdout and "eval accuracy" in result.stdout
    run = tmp_path / "run"
    for name in ("metrics.jsonl", "loss.png", "accuracy.png", "summary.json", "model.safetensors", "recipe.json"):
        assert (run / name).is_file(), name
    assert [s for s, _ in RunDir(run).complete()] == [8, 12]  # keep_last = 2
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in records if r["split"] == "eval"] == [6, 12]
    assert all(math.isfinite(r["loss"]) and "tokens_per_s" in r for r in records if r["split"] == "train")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 12 and summary["stopped"] == "done"
    again = evaluate_checkpoint(run)
    assert again.metrics == pytest.approx(summary["eval"])
    shown = run_cli("eval", run, "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["metrics"]["accuracy"] == pytest.approx(
        summary["eval"]["accuracy"])


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
    first = train(recipe(), tmp_path / "run")
    before = weights(tmp_path / "run")
    second = train(recipe(), tmp_path / "run")
    assert second.stopped == "already complete" and second.eval == pytest.approx(first.eval)
    after = weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)
    from_dir = run_cli("train", tmp_path / "run", "-q")  # a run directory stands for its own recipe
    assert from_dir.exit_code == 0 and "already complete" in from_dir.stdout


def test_interrupted_and_rerun_equals_uninterrupted_bit_for_bit(tmp_path):
    reference = train(recipe(), tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        train(recipe(), tmp_path / "run", reporter=Interrupt(at=7))
    assert [s for s, _ in RunDir(tmp_path / "run").complete()] == [4]
    assert evaluate_checkpoint(tmp_path / "run").location.name == "step-00000004"  # unfinished: newest checkpoint
    resumed = train(recipe(), tmp_path / "run")
    assert resumed.resumed_from == 4
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.eval == reference.eval
    evals = [r["step"] for r in read_metrics(tmp_path / "run/metrics.jsonl") if r["split"] == "eval"]
    assert evals == [6, 12]  # the eval at step 6 was redone once, not logged twice


def _wait(proc: subprocess.Popen, condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path):
    assert PULSE.exists(), "the `pulse` console script is missing beside python; pip install -e ."
    data = recipe_dict(steps=120, checkpoint_every=5, eval_every=50, log_every=5)
    path = write_recipe(tmp_path / "r.toml", data)
    reference = train(pulse.recipe_from_dict(data), tmp_path / "ref")
    run = RunDir(tmp_path / "run")

    def start() -> subprocess.Popen:
        return subprocess.Popen([str(PULSE), "train", str(path), "--out", str(run.root), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    proc = start()
    _wait(proc, lambda: bool(run.complete()), "the first checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    first = run.complete()[-1][0]

    # kill again mid-write of a checkpoint if we catch one, else right after the next lands
    proc = start()
    writing = lambda: any(p.name.startswith(".step-") for p in run.checkpoints.iterdir())  # noqa: E731
    _wait(proc, lambda: writing() or run.complete()[-1][0] > first, "a later checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (run.root / "summary.json").exists()

    resumed = train(pulse.recipe_from_dict(data), run.root)
    assert resumed.resumed_from is not None and resumed.resumed_from >= first and resumed.step == 120
    a, b = weights(tmp_path / "ref"), weights(run.root)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.eval == reference.eval


def test_two_processes_under_torchrun_match_one_process(tmp_path):
    """Two ranks equal one process; a stop signal to one rank alone stops both after the same step, with a
    checkpoint there, and the rerun continues from it."""
    data = recipe_dict(steps=6, eval_every=3, checkpoint_every=3)
    single = train(pulse.recipe_from_dict(data), tmp_path / "one")
    path = write_recipe(tmp_path / "r.toml", {**data, "train": {**data["train"], "grad_accum": 2}})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
               str(PULSE), "train", str(path), "--out", str(tmp_path / "two"), "-q"]
    stopped = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env={**os.environ, faults.SIGNAL_VARIABLE: "4@1"})  # SIGTERM to rank 1 after step 4
    assert stopped.returncode != 0 and " ".join(stopped.stderr.split()).count("stopped after step 4 of 6") == 2
    assert [s for s, _ in RunDir(tmp_path / "two").complete()] == [3, 4]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    records = read_metrics(tmp_path / "two/metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]  # rank 0 alone writes
    summary = json.loads((tmp_path / "two/summary.json").read_text())
    assert summary["eval"]["loss"] == pytest.approx(single.eval["loss"], rel=1e-4) and summary["resumed_from"] == 4


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    train(recipe(steps=4), tmp_path / "one")
    train(recipe(steps=4, grad_accum=4), tmp_path / "four")
    a, b = weights(tmp_path / "one"), weights(tmp_path / "four")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.VARIABLE, "3")
    with pytest.raises(PulseError, match=r"became nan at step 3; training stopped") as err:
        train(recipe(checkpoint_every=1, eval_every=0), tmp_path / "run")
    complete = RunDir(tmp_path / "run").complete()
    assert [s for s, _ in complete] == [1, 2] and str(complete[-1][1]) in str(err.value)
    assert all(torch.isfinite(t).all() for t in load_file(str(complete[-1][1] / "model.safetensors")).values())


def test_the_injected_non_finite_loss_is_scoped_by_run_name_and_a_bad_value_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.VARIABLE, "4@lr=1e3*")
    assert faults.injected_step(tmp_path / "lr=1e3") == 4 and faults.injected_step(tmp_path / "lr=1e-2") is None
    monkeypatch.setenv(faults.VARIABLE, "")
    assert faults.injected_step(tmp_path) is None
    for bad in ("0", "x", "-1@*"):
        monkeypatch.setenv(faults.VARIABLE, bad)
        with pytest.raises(PulseError, match="STEP or STEP@GLOB"):
            faults.injected_step(tmp_path)


def test_a_different_recipe_in_the_same_directory_is_refused(tmp_path):
    train(recipe(steps=4), tmp_path / "run")
    with pytest.raises(PulseError, match=r"different recipe \(differs at train.lr\)"):
        train(recipe(steps=4, lr=1e-2), tmp_path / "run")
    changed = pulse.recipe_from_dict({**recipe_dict(steps=4), "model": {**recipe_dict()["model"], "dim": 32}})
    with pytest.raises(PulseError, match="model.dim"):
        train(changed, tmp_path / "run", resume=True)
    with pytest.raises(PulseError, match="no checkpoint to continue from"):
        train(recipe(steps=4), tmp_path / "empty", resume=True)
    # --resume accepts new [train] settings (say, after a NaN stop) and continues from the checkpoint
    longer = train(recipe(steps=6, lr=1e-2), tmp_path / "run", resume=True)
    assert longer.resumed_from == 4 and longer.step == 6


def test_time_budget_stops_early_and_counts_as_finished(tmp_path):
    result = train(recipe(steps=1000, max_time=1e-6, eval_every=0), tmp_path / "run")
    assert result.stopped == "time limit" and result.step == 1
    assert train(recipe(steps=1000, max_time=1e-6, eval_every=0), tmp_path / "run").stopped == "already complete"


def test_listops_on_a_language_model_trains_and_evaluates_its_head(tmp_path):
    task = {"kind": "listops", "min_len": 8, "max_len": 24, "max_depth": 3, "max_args": 4, "num_train": 32,
            "num_test": 16}
    data = recipe_dict(task=task, steps=3, eval_every=0)
    result = train(pulse.recipe_from_dict(data), tmp_path / "run")
    assert (tmp_path / "run/head.safetensors").is_file()
    assert evaluate_checkpoint(tmp_path / "run").metrics == pytest.approx(result.eval)
    other = run_cli("eval", tmp_path / "run", "--task", "mqar", "--set", "task.vocab_size=32",
                    "--set", "task.seq_len=16", "--set", "task.num_kv_pairs=2")
    assert other.exit_code == 0, other.output
    assert "accuracy" in other.stdout


def test_eval_of_another_headed_task_says_what_is_missing(tmp_path):
    train(recipe(steps=2, eval_every=0), tmp_path / "run")
    result = run_cli("eval", tmp_path / "run", "--task", "listops")
    assert result.exit_code == 2 and "task head" in result.output and "trained on `mqar`" in result.output


def test_weight_decay_skips_norms_biases_and_embeddings():
    model = pulse.build_model(recipe())
    groups = param_categories(model)
    assert [p for p in groups["embeddings"]] == [model.embed.weight]  # the tied head counted once
    assert all(p.ndim < 2 for p in groups["norms"] + groups["biases"]) and groups["matrices"]
    optimizer = make_optimizer(model, TrainSpec(weight_decay=0.1))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in groups["matrices"]}
    everything = make_optimizer(model, TrainSpec(weight_decay=0.1, no_decay=[]))
    assert len(everything.param_groups) == 1 and everything.param_groups[0]["weight_decay"] == 0.1


def test_schedule_warms_up_then_decays_to_the_floor():
    spec = TrainSpec(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, spec) for s in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11)
    assert factors[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(100, spec) == pytest.approx(0.1)
    linear = TrainSpec(steps=100, schedule="linear", min_lr_ratio=0.0)
    assert lr_factor(50, linear) == pytest.approx(0.5)
    assert lr_factor(77, TrainSpec(steps=100, schedule="constant")) == 1.0
