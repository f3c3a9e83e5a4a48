"""Run directories: resume applies changed settings, pickle-free state, fallback past damage, one writer,
no overwrite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import run_cli
from pulse.errors import PulseError
from pulse.paths import DirLock
from pulse.specs.run import TrainSpec
from pulse.storage.checkpoint import WEIGHTS
from pulse.storage.rundir import RunDir
from pulse.storage.runfiles import STATE
from pulse.storage.state import load_state, read_metrics, rng_state, save_state
from pulse.train import loop as loop_module
from pulse.train import train
from pulse.train.faults import VARIABLE as INJECT
from pulse.train.optim import lr_factor
from test_train import Interrupt, recipe, recipe_dict, weights, write_recipe


class Messages(Interrupt):
    """A reporter that keeps its messages (and never interrupts)."""

    def __init__(self):
        super().__init__(at=-1)
        self.said: list[str] = []

    def message(self, text):
        self.said.append(text)


def spy_optimizer(monkeypatch) -> list:
    made = []
    real = loop_module.make_optimizer

    def make(module, spec):
        made.append(real(module, spec))
        return made[-1]

    monkeypatch.setattr(loop_module, "make_optimizer", make)
    return made


def test_resume_applies_changed_lr_weight_decay_betas_and_schedule(tmp_path, monkeypatch):
    train(recipe(steps=4), tmp_path / "run")
    made = spy_optimizer(monkeypatch)
    said = Messages()
    new = {"steps": 8, "lr": 1e-2, "weight_decay": 0.0, "betas": [0.8, 0.9], "schedule": "linear", "warmup_steps": 0}
    result = train(recipe(**new), tmp_path / "run", resume=True, reporter=said)
    assert result.resumed_from == 4 and result.step == 8
    assert any("train.lr 0.003 → 0.01" in m and "applied" in m for m in said.said), said.said
    opt = made[-1]
    assert all(g["betas"] == (0.8, 0.9) for g in opt.param_groups)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    spec = TrainSpec(**{**recipe_dict()["train"], **new})
    logged = {r["step"]: r["lr"] for r in read_metrics(tmp_path / "run/metrics.jsonl") if r["split"] == "train"}
    # the lr logged for step k is the one its update used: 1e-2 · factor(k - 1) of the *new* linear schedule
    for step in (6, 8):
        assert logged[step] == 1e-2 * lr_factor(step - 1, spec)
    stored = json.loads((tmp_path / "run/run.json").read_text())["recipe"]["train"]
    assert stored["lr"] == 1e-2 and stored["schedule"] == "linear"


def test_changed_train_settings_without_resume_are_refused_with_the_ways_on(tmp_path):
    train(recipe(steps=4), tmp_path / "run")
    with pytest.raises(PulseError, match=r"differs at train.lr.*--resume.*--force.*--out"):
        train(recipe(steps=4, lr=1e-2), tmp_path / "run")


def test_nan_stop_then_resume_with_a_lower_lr_uses_it(tmp_path, monkeypatch):
    data = recipe_dict(lr=3.0, checkpoint_every=1, eval_every=0, log_every=1, steps=20)
    path = write_recipe(tmp_path / "r.toml", data)
    monkeypatch.setenv(INJECT, "3")  # the loss of step 3 is NaN, on every machine (a real divergence is not)
    first = run_cli("train", path, "--out", tmp_path / "nan3", "-q")
    assert first.exit_code == 2 and "became nan at step 3" in first.stderr and "rerun with --resume" in first.stderr
    monkeypatch.delenv(INJECT)
    again = run_cli("train", tmp_path / "nan3", "--resume", "--set", "train.lr=0.001", "-q")
    assert again.exit_code == 0, again.output
    assert "train.lr 3.0 → 0.001" in again.stdout
    assert json.loads((tmp_path / "nan3/run.json").read_text())["recipe"]["train"]["lr"] == 0.001
    assert json.loads((tmp_path / "nan3/summary.json").read_text())["resumed_from"] == 2


def test_a_nan_stop_before_any_checkpoint_names_the_way_out_and_it_works(tmp_path, monkeypatch):
    path = write_recipe(tmp_path / "r.toml", recipe_dict(checkpoint_every=4, eval_every=0, steps=8))
    monkeypatch.setenv(INJECT, "2")
    first = run_cli("train", path, "--out", tmp_path / "run", "-q")
    assert first.exit_code == 2 and "nothing to resume" in first.stderr and "--force" in first.stderr, first.stderr
    assert "--resume" not in first.stderr
    monkeypatch.delenv(INJECT)
    again = run_cli("train", path, "--out", tmp_path / "run", "--force", "-q")
    assert again.exit_code == 0, again.output


def test_resumed_run_continues_from_rolled_back_healthy_weights_with_the_new_lr(tmp_path, monkeypatch):
    """The NaN advice works: from a checkpoint whose weights are healthy, a lower lr trains on to the end."""
    monkeypatch.setenv(INJECT, "5")
    with pytest.raises(PulseError, match="became nan at step 5"):
        train(recipe(lr=3.0, grad_clip=0.0, checkpoint_every=1, eval_every=0, steps=20, keep_last=20), tmp_path / "run")
    monkeypatch.delenv(INJECT)
    run = RunDir(tmp_path / "run")
    assert [s for s, _ in run.complete()] == [1, 2, 3, 4]
    for _, path in run.complete()[1:]:  # keep only the step-1 checkpoint
        shutil.rmtree(path)
    result = train(recipe(lr=1e-3, grad_clip=0.0, checkpoint_every=1, eval_every=0, steps=20, keep_last=20),
                   tmp_path / "run", resume=True)
    assert result.resumed_from == 1 and result.step == 20


def test_training_state_is_safetensors_and_json_and_round_trips_exactly(tmp_path):
    train(recipe(steps=4), tmp_path / "run")
    step_dir = RunDir(tmp_path / "run").complete()[-1][1]
    assert sorted(p.name for p in step_dir.iterdir()) == ["model.safetensors", "recipe.json", STATE]
    assert not list((tmp_path / "run").rglob("*.pt"))
    state = load_state(step_dir / STATE)
    assert state["step"] == 4 and isinstance(state["optimizer"], dict)
    rng = rng_state()
    save_state(tmp_path / "s.safetensors", {"rng": rng, "x": (1, 2.5, float("inf")), "d": {3: "a"}})
    back = load_state(tmp_path / "s.safetensors")
    assert torch.equal(back["rng"]["torch"], rng["torch"]) and back["rng"]["python"][1] == rng["python"][1]
    assert back["x"] == (1, 2.5, float("inf")) and back["d"] == {3: "a"}


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_stays_bit_identical(tmp_path):
    reference = train(recipe(), tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        train(recipe(), tmp_path / "run", reporter=Interrupt(at=10))
    run = RunDir(tmp_path / "run")
    assert [s for s, _ in run.complete()] == [4, 8]
    state = run.complete()[-1][1] / STATE
    data = bytearray(state.read_bytes())
    data[-3] ^= 0xFF
    state.write_bytes(bytes(data))
    said = Messages()
    resumed = train(recipe(), tmp_path / "run", reporter=said)
    assert resumed.resumed_from == 4
    assert any("skipping damaged checkpoint step-00000008" in m for m in said.said), said.said
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.eval == reference.eval


def test_when_no_checkpoint_can_be_read_nothing_is_changed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(recipe(), tmp_path / "run", reporter=Interrupt(at=5))
    run = RunDir(tmp_path / "run")
    (run.complete()[-1][1] / STATE).write_bytes(b"\x80\x04pickle")
    before = sorted(p.relative_to(run.root) for p in run.root.rglob("*"))
    with pytest.raises(PulseError, match="none of its 1 checkpoint"):
        train(recipe(), run.root)
    assert sorted(p.relative_to(run.root) for p in run.root.rglob("*")) == before


def test_a_second_writer_is_refused_naming_the_owner_and_a_dead_owner_is_taken_over(tmp_path):
    path = write_recipe(tmp_path / "r.toml", recipe_dict(steps=2))
    with DirLock(tmp_path / "run"):
        busy = run_cli("train", path, "--out", tmp_path / "run", "-q")
    assert busy.exit_code == 2 and f"pid {os.getpid()}" in busy.stderr
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    (tmp_path / "run/.pulse-lock").write_text(dead.stdout)
    assert run_cli("train", path, "--out", tmp_path / "run", "-q").exit_code == 0
    assert not (tmp_path / "run/.pulse-lock").exists()


def test_build_and_train_never_overwrite_a_run_and_force_moves_it_aside(tmp_path):
    path = write_recipe(tmp_path / "r.toml", recipe_dict(steps=2))
    assert run_cli("train", path, "--out", tmp_path / "run", "-q").exit_code == 0
    trained = (tmp_path / "run" / WEIGHTS).read_bytes()
    built = run_cli("build", "recipes/transformer.toml", "--out", tmp_path / "run")
    assert built.exit_code == 2 and "--force" in built.stderr and "holds a run" in built.stderr
    other = write_recipe(tmp_path / "o.toml", {**recipe_dict(steps=2), "model": {**recipe_dict()["model"], "dim": 32}})
    refused = run_cli("train", other, "--out", tmp_path / "run", "-q")
    assert refused.exit_code == 2 and "--force" in refused.stderr and "model.dim" in refused.stderr
    assert (tmp_path / "run" / WEIGHTS).read_bytes() == trained
    forced = run_cli("build", "recipes/transformer.toml", "--out", tmp_path / "run", "--force")
    assert forced.exit_code == 0, forced.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / WEIGHTS).read_bytes() == trained
    assert run_cli("train", other, "--out", tmp_path / "run", "-q", "--force").exit_code == 0


@pytest.mark.parametrize("command", [
    ["schema", "--out", "{f}/x.json"],
    ["build", "recipes/transformer.toml", "--out", "{f}/x"],
    ["train", "{r}", "--out", "{f}/x", "-q"],
    ["bench", "recipes/transformer.toml", "--json", "{f}/x.json"],
    ["bench", "recipes/transformer.toml", "--plot", "{f}/x.png"],
    ["bench", "recipes/transformer.toml", "--json", "{d}"],
])
def test_output_paths_are_checked_before_any_work(tmp_path, command):
    (tmp_path / "file").write_text("x")
    path = write_recipe(tmp_path / "r.toml", recipe_dict(steps=2))
    args = [a.format(f=tmp_path / "file", r=path, d=tmp_path) for a in command]
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert "is a file" in result.stderr or "is a directory" in result.stderr
    assert not (tmp_path / "file.replaced").exists()


def test_train_run_dir_checks_recipe_json_against_the_stored_hash(tmp_path):
    train(recipe(steps=2), tmp_path / "run")
    readable = tmp_path / "run/recipe.json"
    data = json.loads(readable.read_text())
    data["train"]["lr"] = 0.5
    readable.write_text(json.dumps(data))
    result = run_cli("train", tmp_path / "run", "-q")
    assert result.exit_code == 2 and "recipe.json does not match" in result.stderr


def test_a_run_resumed_with_new_settings_continues_from_its_directory(tmp_path):
    run = tmp_path / "run"
    train(recipe(steps=4), run)
    with pytest.raises(KeyboardInterrupt):
        train(recipe(steps=12), run, resume=True, reporter=Interrupt(at=9))
    result = run_cli("train", run, "-q")  # the newest checkpoint's recipe (steps = 12) is the run's now
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["step"] == 12


@pytest.mark.parametrize("name", ["recipe.json", "loss.png", "accuracy.png", "tokenizer.json"])
def test_out_never_overwrites_a_users_file_that_a_run_would_write(tmp_path, name):
    path = write_recipe(tmp_path / "r.toml", recipe_dict(steps=2, eval_every=0))
    for command in (["build", path, "--out"], ["train", path, "-q", "--out"]):
        out = tmp_path / command[0]
        out.mkdir()
        (out / name).write_text("mine")
        refused = run_cli(*command, out)
        assert refused.exit_code == 2 and "no run of PULSE wrote them" in refused.stderr, refused.output
        assert (out / name).read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [name]
        forced = run_cli(*command, out, "--force")
        assert forced.exit_code == 0, forced.output
        aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{command[0]}.replaced-")]
        assert len(aside) == 1 and (aside[0] / name).read_text() == "mine"
