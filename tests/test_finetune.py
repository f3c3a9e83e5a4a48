"""Fine-tuning from a run ([train] init_from / --init), plain progress lines off a TTY, and the
train and eval tables at 80 columns."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

import pulse
from helpers import run_cli
from pulse.errors import PulseError
from pulse.train import train
from pulse.train.init import fit_report, init_weights
from pulse.train.progress import RichReporter, fmt_duration
from test_train import write_recipe


def recipe_dict(dim: int = 16, **train_settings) -> dict:
    return {
        "model": {"kind": "lm", "vocab_size": 32, "dim": dim, "depth": 1, "layout": ["attn"],
                  "mixers": {"attn": {"kind": "attention", "num_heads": 2}}, "positions": {"kind": "rotary"}},
        "task": {"kind": "mqar", "vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2, "num_train": 32, "num_test": 16},
        "train": {"steps": 4, "batch_size": 8, "lr": 3e-3, "eval_every": 0, "checkpoint_every": 2, "log_every": 2,
                  "threads": 1, "device": "cpu", **train_settings},
    }


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("base")
    train(pulse.recipe_from_dict(recipe_dict()), root / "run")
    return root / "run"


def test_init_from_loads_the_run_weights_and_records_the_start(base_run, tmp_path):
    start = pulse.recipe_from_dict(recipe_dict(steps=1, lr=1e-9, init_from=str(base_run)))
    result = train(start, tmp_path / "ft")
    assert result.init_from["from"] == str(base_run) and result.init_from["step"] == 4
    assert result.init_from["weights"] == str(base_run / "model.safetensors")
    # one step at lr 1e-9 barely moves the weights: they start from the base run's, not from the seed
    before, after = load_file(str(base_run / "model.safetensors")), load_file(str(tmp_path / "ft/model.safetensors"))
    fresh = pulse.build_model(pulse.recipe_from_dict(recipe_dict())).state_dict()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-6)
    assert not torch.equal(before["embed.weight"], fresh["embed.weight"])
    summary = json.loads((tmp_path / "ft/summary.json").read_text())
    stored = json.loads((tmp_path / "ft/recipe.json").read_text())
    assert summary["init_from"] == result.init_from
    assert summary["init_from"]["recipe_hash"] == pulse.load_recipe(base_run / "recipe.json").hash()
    assert stored["train"]["init_from"] == str(base_run)


def test_init_from_a_step_checkpoint_and_a_resumed_run_keeps_its_record(base_run, tmp_path):
    step_dir = base_run / "checkpoints/step-00000002"
    first = train(pulse.recipe_from_dict(recipe_dict(steps=2, init_from=str(step_dir))), tmp_path / "ft")
    assert first.init_from["weights"] == str(step_dir / "model.safetensors")
    longer = train(pulse.recipe_from_dict(recipe_dict(steps=4, init_from=str(step_dir))), tmp_path / "ft", resume=True)
    assert longer.resumed_from == 2 and longer.init_from == first.init_from


def test_a_mismatched_recipe_names_every_tensor(base_run):
    wider = pulse.build_model(pulse.recipe_from_dict(recipe_dict(dim=32)))
    problems = fit_report(wider, base_run / "model.safetensors")
    assert len(problems) == len(wider.state_dict()) - 1  # the tied head is the embedding
    with pytest.raises(PulseError) as err:
        init_weights(wider, None, base_run)
    text = str(err.value)
    for name, tensor in wider.state_dict().items():
        if name != "head.weight":
            assert f"{name}: the recipe expects shape {tuple(tensor.shape)}" in text
    assert "embed.weight: the recipe expects shape (32, 32), the checkpoint has (32, 16)" in text
    deeper_model = {**recipe_dict()["model"], "depth": 2}
    deeper = pulse.build_model(pulse.recipe_from_dict({**recipe_dict(), "model": deeper_model}))
    text = str(pytest.raises(PulseError, init_weights, deeper, None, base_run).value)
    extra = [n for n in deeper.state_dict() if n.startswith("stack.layers.1.")]
    assert extra and all(f"{n}: missing from the checkpoint" in text for n in extra)
    shallow = pulse.build_model(pulse.recipe_from_dict({**recipe_dict(), "model": {**recipe_dict()["model"], "depth": 1,
                                                                                  "tie_embeddings": False}}))
    assert "head.weight: missing from the checkpoint" in str(pytest.raises(PulseError, init_weights, shallow, None,
                                                                           base_run).value)
    with pytest.raises(PulseError, match="init_from.*no such file or directory"):
        init_weights(wider, None, base_run.parent / "nope")


def test_cli_init_flag_prints_lines_off_a_tty_and_fits_80_columns(base_run, tmp_path):
    path = write_recipe(tmp_path / "tiny.toml", recipe_dict())
    result = run_cli("train", path, "--init", base_run, "--out", tmp_path / "ft", "--print-every", "1")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(re.search(r"loss \d+\.\d{4} · accuracy [\d.]+ · [\d.]+k? tok/s · elapsed \S+ · ETA \S+", line)
               for line in lines), lines
    assert f"weights from {base_run}" in " ".join(result.stdout.split())
    assert max(map(len, result.stdout.splitlines())) <= 80
    for name in ("steps", "wall time", "tokens", "parameters", "eval accuracy", "started from", "checkpoint", "files"):
        assert re.search(rf"(?m)^\W*{name}\s", result.stdout), name
    stored = json.loads((tmp_path / "ft/recipe.json").read_text())
    assert stored["train"]["init_from"] == str(base_run)
    shown = run_cli("eval", tmp_path / "ft")
    assert shown.exit_code == 0 and max(map(len, shown.stdout.splitlines())) <= 80
    assert re.search(r"(?m)^\W*accuracy\s+\d", shown.stdout) and re.search(r"(?m)^\W*loss\s+\d", shown.stdout)


def test_changed_train_table_on_a_run_directory_mentions_resume(base_run, tmp_path):
    path = write_recipe(tmp_path / "tiny.toml", recipe_dict(lr=1e-2))
    result = run_cli("train", path, "--out", base_run)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "differs at train.lr" in text and "--resume" in text


def test_plain_reporter_every_n_steps_with_eta():
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=80), live=None, every=5)
    assert not reporter.live and reporter.plain
    reporter.start({"metric": "accuracy", "steps": 12, "resumed_from": 2, "recipe": "r", "model": "lm", "params": 10,
                    "task": "mqar", "batch_size": 8, "device": "cpu", "world": 1, "out_dir": "o"})
    for step in range(3, 13):
        reporter.step(step, {"loss": 1.0, "accuracy": 0.5, "tokens_per_s": 1234.0})
    lines = [line for line in out.getvalue().splitlines() if line.startswith("step")]
    assert [line.split()[1] for line in lines] == ["5/12", "10/12", "12/12"]
    assert lines[-1].endswith("ETA 0s") and "1.23k tok/s" in lines[0]
    assert RichReporter(Console(file=io.StringIO()), live=None, quiet=True).plain is False
    assert fmt_duration(3725) == "1h02m05s" and fmt_duration(65) == "1m05s" and fmt_duration(4.2) == "4s"


@pytest.mark.parametrize("width", [80, 120])
def test_live_bar_never_cuts_its_numbers(width):
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=width, force_terminal=True, color_system=None), live=True)
    reporter.start({"metric": "bit_accuracy", "steps": 1000, "resumed_from": None, "recipe": "r", "model": "lm",
                    "params": 10, "task": "copy", "batch_size": 8, "device": "cpu", "world": 1, "out_dir": "o"})
    reporter.step(4, {"loss": 1.0, "bit_accuracy": 0.5, "tokens_per_s": 12345.0})
    reporter.progress.refresh()
    reporter.progress.stop()
    last = out.getvalue().split("\r")[-1]
    assert "4/1000" in last and "bit_accuracy 0.5000" in last and "12.35k tok/s" in last and "ETA" in last
    assert "…" not in last


def test_the_eta_counts_the_time_budget():
    reporter = RichReporter(Console(file=io.StringIO(), width=80), live=None, every=1)
    reporter.start({"metric": "accuracy", "steps": 1000, "resumed_from": None, "recipe": "r", "model": "lm",
                    "params": 10, "task": "mqar", "batch_size": 8, "device": "cpu", "world": 1, "out_dir": "o",
                    "max_time": 100.0, "elapsed": 30.0})
    # 10 steps in 20 s: 990 steps left would take 1980 s, but max_time leaves 100 − 30 − 20 = 50 s
    assert reporter.eta(10, 20.0) == pytest.approx(50.0)
    reporter.max_time = None
    assert reporter.eta(10, 20.0) == pytest.approx(1980.0)


def test_steps_much_slower_than_at_the_start_are_said_once_naming_train_threads():
    from pulse.train.slow_steps import SlowSteps

    watch = SlowSteps(2)
    said = [watch(t) for t in [5.0, 3.0] + [1.0] * 8 + [1.1] * 10 + [9.0] * 10 + [9.0] * 10]
    messages = [m for m in said if m]
    assert len(messages) == 1 and "train.threads = 2" in messages[0] and "9×" in messages[0]
    assert said.index(messages[0]) == 29  # the first whole window of slow steps, not the slow warm-up steps


def test_fine_tuning_starts_from_a_checkpoint_saved_before_the_stack_became_a_child(tmp_path):
    """train.init_from on weights named layers.* (tests/data/before-composition) loads them into stack.layers.*."""
    old = Path(__file__).parent / "data" / "before-composition" / "sequence"
    recipe = pulse.recipe_from_dict({"model": json.loads((old / "recipe.json").read_text())["model"]})
    model = pulse.build_model(recipe)
    init_weights(model, None, old)
    saved = load_file(str(old / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[f"stack.{n}" if n.split(".")[0] in ("layers", "final_norm") else n], t)
               for n, t in saved.items())
