"""`pulse benchmark`: a recipe and a baseline over a suite's tasks, refitted per task, resumable, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import run_cli
from pulse.errors import PulseError
from pulse.experiments.suites import SUITES, plan, suite
from test_train import recipe_dict, write_recipe

# ListOps made tiny: the suite's own table is the LRA's 500-2,000 tokens
SMALL = ["listops.task.min_len=8", "listops.task.max_len=24", "listops.task.max_depth=3", "listops.task.max_args=4",
         "listops.task.num_train=32", "listops.task.num_test=16", "listops.train.batch_size=8", "train.threads=1"]


def _sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


@pytest.fixture
def two(tmp_path) -> tuple[Path, Path]:
    attn = write_recipe(tmp_path / "attn.toml", recipe_dict())
    data = recipe_dict()
    data["model"]["layout"] = ["delta"]
    data["model"]["mixers"] = {"delta": {"kind": "gated_deltanet", "num_heads": 2, "chunk_size": 8}}
    del data["model"]["positions"]
    return attn, write_recipe(tmp_path / "delta.toml", data)


def test_every_suite_lists_the_tasks_the_issue_names():
    assert [t.name for t in suite("lra")] == ["listops", "text", "retrieval", "image", "pathfinder"]
    assert [t.task["task_id"] for t in suite("babi")] == [1, 2, 3, 6, 15]
    lengths = {t.name: t.task.get("max_len") for t in suite("lra")}
    assert lengths["listops"] == 2000 and lengths["text"] == 4000 and lengths["retrieval"] == 4000
    assert set(SUITES) == {"lra", "babi"}


def test_a_model_is_refitted_to_each_task_and_scoped_sets_stay_in_their_task(two):
    attn, _ = two
    root, cells = plan([attn], "lra", budget=0.002, only=["listops"], lrs=[1e-3, 3e-3], overrides=SMALL)
    (cell,) = cells
    assert [p.recipe.train.lr for p in cell.points] == [1e-3, 3e-3]
    recipe = cell.points[0].recipe
    assert recipe.model.vocab_size == 16 and recipe.task.kind == "listops" and recipe.task.max_len == 24
    assert recipe.train.steps == 4 and recipe.train.batch_size == 8 and recipe.train.max_time is None
    assert cell.points[1].out_dir == root / "attn" / "listops" / "lr=0.003,eval=16"  # below budget 0.1 eval is capped


def test_benchmark_trains_both_recipes_writes_the_table_and_a_rerun_skips(tmp_path, two):
    attn, delta = two
    out = tmp_path / "bench"
    args = ["benchmark", attn, "--task", "lra", "--vs", delta, "--only", "listops", "--budget", "0.002",
            "--lr", "1e-3,3e-3", "--out", out, "-q", *_sets(SMALL)]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert "projected time of the runs to train" in said
    assert said.index("projected time") < said.index("training into")  # said before the first step
    doc = json.loads((out / "benchmark.json").read_text())
    assert doc["systems"] == ["attn", "delta"] and doc["tasks"] == ["listops"]
    for cell in doc["cells"]:
        assert len(cell["runs"]) == 2 and all(r["status"] == "trained" for r in cell["runs"])
        assert cell["best"]["value"] == max(r["value"] for r in cell["runs"])
    assert doc["average"]["attn"]["value"] == doc["cells"][0]["best"]["value"]
    md = (out / "benchmark.md").read_text()
    assert "| listops |" in md and "**average**" in md and doc["machine"]["device_name"] in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    again = run_cli(*args)
    assert again.exit_code == 0 and again.output.count("finished before, skipped") == 4
    assert "projected time" not in again.output  # nothing left to train


@pytest.mark.audit("pulse benchmark", "correct")
def test_the_budget_scales_training_examples_and_held_out_examples(two):
    sizes = {}
    for budget in (0.2, 0.001, 0.0001):
        _, cells = plan([two[0]], "lra", budget=budget, only=["listops", "retrieval", "image", "pathfinder"])
        sizes[budget] = {c.task: (c.points[0].recipe.train.steps, c.points[0].recipe.train.batch_size,
                                  c.points[0].recipe.task.num_test, c.points[0].out_dir.name) for c in cells}
    assert sizes[0.2]["listops"] == (400, 32, 1000, "lr=0.003")  # the whole held-out set, as in docs/benchmarks.md
    assert sizes[0.001]["listops"] == (2, 32, 10, "lr=0.003,eval=10")  # 64 examples; eval 1,000 × 0.001 / 0.1
    assert sizes[0.001]["retrieval"] == (2, 16, 10, "lr=0.003,eval=10")
    # less than one batch: one step of the examples the budget buys (listops 2,000 × 32 × 1e-4 = 6.4), eval >= 8
    assert {t: v[:3] for t, v in sizes[0.0001].items()} == {
        "listops": (1, 7, 8), "retrieval": (1, 4, 8), "image": (1, 10, 8), "pathfinder": (1, 10, 8)}
    _, cells = plan([two[0]], "lra", budget=0.0001, only=["listops"], overrides=["train.grad_accum=2"])
    assert cells[0].points[0].recipe.train.batch_size == 8  # 7 examples in whole micro-batches of 2


def test_the_projection_counts_the_remaining_steps_and_evals(tmp_path, two):
    from pulse.experiments.suites_time import run_seconds

    _, cells = plan([two[0]], "lra", budget=0.002, only=["listops"], overrides=[*SMALL, "train.eval_every=2"],
                    out=tmp_path / "b")
    point = cells[0].points[0]  # 4 steps of 8, evals at step 2 and at the end, of 16 examples each
    assert run_seconds(point, 0.5, 16) == 0.5 * (4 * 8 + 2 * 16 / 3)


@pytest.mark.audit("pulse benchmark", "clean")
def test_every_task_s_data_and_option_is_checked_before_anything_trains(tmp_path, two):
    aan = tmp_path / "aan"
    aan.mkdir()
    (aan / "new_aan_pairs.train.tsv").write_text("1\ta\tb\tsome text\n")  # 4 columns
    (aan / "new_aan_pairs.test.tsv").write_text("1\ta\tb\tx\ty\n")
    cases = [({"text": str(tmp_path / "nonexistent")}, [], "lra/text: task.path .* does not exist"),
             ({"retrieval": str(tmp_path / "nonexistent")}, [], "the AAN file .* does not exist"),
             ({"retrieval": str(aan)}, [], r"new_aan_pairs.train.tsv, line 1: 4 tab-separated columns"),
             ({}, ["train.device=cuda"] if not torch.cuda.is_available() else ["train.grad_accum=3"],
              "lra/listops: train.device = \"cuda\" but no CUDA device|must divide by grad_accum")]
    for data, sets, message in cases:
        with pytest.raises(PulseError, match=message):
            plan([two[0]], "lra", data=data, overrides=sets, out=tmp_path / "x")
    result = run_cli("benchmark", two[0], "--task", "lra", "--data", f"text={tmp_path / 'nonexistent'}", "--out",
                     tmp_path / "x", "-q")
    assert result.exit_code == 2 and "does not exist" in result.output and not (tmp_path / "x").exists()


@pytest.mark.audit("pulse benchmark", "clean")
def test_a_run_directory_holding_another_model_is_refused_up_front(tmp_path, two):
    attn, delta = two
    out = tmp_path / "b"
    (root, cells) = plan([delta], "lra", budget=0.002, only=["listops"], overrides=SMALL, out=out)
    from pulse.train.loop import train

    train(cells[0].points[0].recipe, root / "attn" / "listops" / cells[0].points[0].out_dir.name)
    with pytest.raises(PulseError, match="attn/listops/.*no --force: give another --out"):
        plan([attn], "lra", budget=0.002, only=["listops"], overrides=SMALL, out=out)


def test_a_task_without_its_local_data_is_reported_not_run(two):
    _, cells = plan([two[0]], "lra", only=["text"])
    assert cells[0].skipped == "needs local data: --data text=PATH" and not cells[0].points


@pytest.mark.parametrize("args, phrase", [
    (["--task", "lar"], "did you mean `lra`"),
    (["--task", "lra", "--only", "pathfindr"], "did you mean `pathfinder`"),
    (["--task", "lra", "--budget", "0"], "must be above 0"),
    (["--task", "lra", "--lr", "fast"], "expected learning rates"),
    (["--task", "lra", "--data", "text"], "expected TASK=PATH"),
])
def test_bad_benchmark_input_exits_2_with_a_paragraph(two, args, phrase):
    result = run_cli("benchmark", two[0], *args)
    assert result.exit_code == 2 and phrase in " ".join(result.output.split()), result.output


def test_the_suite_is_validated_before_anything_trains(tmp_path, two):
    with pytest.raises(PulseError, match="listops"):
        plan([two[0]], "lra", only=["listops"], overrides=["listops.task.min_len=0"], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
