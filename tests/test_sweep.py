"""Sweeps: one run per grid point, validation before anything runs, skip/resume on rerun, the report."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import load_tool, run_cli
from pulse.errors import PulseError
from pulse.experiments.sweep import parse_grid, point_name, split_values, sweep
from pulse.experiments.sweep_report import best_row
from pulse.storage.state import read_metrics
from pulse.train.faults import VARIABLE as INJECT
from test_train import Interrupt, recipe_dict, write_recipe


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A tiny MQAR recipe: a 2-layer attention LM of width 16, 12 steps, a checkpoint every 4."""
    return write_recipe(tmp_path / "tiny.toml", recipe_dict())


def read_doc(root: Path) -> tuple[dict, str]:
    return json.loads((root / "sweep.json").read_text()), (root / "sweep.md").read_text()


def test_grid_parsing_and_point_names():
    assert parse_grid("train.lr=3e-4, 1e-3,3e-3") == ("train.lr", ["3e-4", "1e-3", "3e-3"])
    assert split_values('["a","b"],["c"]') == ['["a","b"]', '["c"]']
    assert split_values("'x,y',z") == ["'x,y'", "z"]
    assert point_name({"train.lr": "1e-3", "model.dim": "64"}) == "lr=1e-3,dim=64"
    # a last component shared by two keys is lengthened until the names differ
    two = {"model.mixers.a.num_heads": "2", "model.mixers.b.num_heads": "4"}
    assert point_name(two) == "a.num_heads=2,b.num_heads=4"
    assert point_name({"model.layout": '["pulse", "attn"]', "model.tie": "true"}) == "layout=pulse+attn,tie=true"
    assert point_name({"task.path": "a/b c"}) == "path=a_bc"
    for bad in ("train.lr", "train.lr=", "=1,2", "train..lr=1", "train.lr=1,,2", "train.lr=1,1"):
        with pytest.raises(PulseError, match="--grid"):
            parse_grid(bad)


def test_best_row_follows_the_metric_direction():
    rows = [{"name": "a", "value": 0.5}, {"name": "b", "value": 0.9}, {"name": "c", "value": None},
            {"name": "d", "value": float("nan")}]
    assert best_row(rows, True)["name"] == "b"
    assert best_row(rows, False)["name"] == "a"
    assert best_row([{"name": "c", "value": None}], True) is None


def test_cli_sweep_two_lrs_then_rerun_skips(tmp_path, tiny):
    out = tmp_path / "sweep"
    result = run_cli("sweep", tiny, "--grid", "train.lr=1e-3,1e-2", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    doc, md = read_doc(out)
    names = ["lr=1e-3", "lr=1e-2"]
    assert [p["name"] for p in doc["points"]] == names
    for point in doc["points"]:
        summary = json.loads((out / point["name"] / "summary.json").read_text())
        assert point["status"] == "trained" and point["step"] == 12 == summary["step"]
        assert point["value"] == summary["eval"]["accuracy"]
        stored = json.loads((out / point["name"] / "recipe.json").read_text())
        assert stored["train"]["lr"] == float(point["values"]["train.lr"])
        # attention's state is its KV cache: 2 layers × (K, V) × 16 tokens × d 16
        assert point["params"] == summary["params"] and point["state_elements"] == 2 * 2 * 16 * 16
        assert f"| {point['name']}" in md
    best = max(doc["points"], key=lambda p: p["value"])
    assert doc["best"] == best["name"] and doc["metric"] == "accuracy" and doc["higher_is_better"]
    assert f"| {best['name']} **(best)** |" in md and f"**{best['value']:.4f}**" in md
    assert "best: " + best["name"] in result.stdout
    if hasattr(os, "getloadavg"):
        assert doc["load_at_start"] >= 0 and f"load average {doc['load_at_start']:.1f} when the sweep started" in md

    stamps = {n: (out / n / "summary.json").stat().st_mtime_ns for n in names}
    again = run_cli("sweep", tiny, "--grid", "train.lr=1e-3,1e-2", "--out", out, "-q")
    assert again.exit_code == 0, again.output
    doc2, _ = read_doc(out)
    assert [p["status"] for p in doc2["points"]] == ["skipped", "skipped"]
    assert [p["value"] for p in doc2["points"]] == [p["value"] for p in doc["points"]]
    assert stamps == {n: (out / n / "summary.json").stat().st_mtime_ns for n in names}


def test_an_interrupted_point_is_resumed_and_more_steps_extend_a_finished_one(tmp_path, tiny):
    out = tmp_path / "sweep"
    grids = ["train.lr=3e-3,1e-2"]
    with pytest.raises(KeyboardInterrupt):
        sweep(tiny, grids, out=out, reporter=lambda point: Interrupt(at=6), say=lambda text: None)
    assert not (out / "lr=3e-3" / "summary.json").exists() and not (out / "lr=1e-2").exists()
    result = sweep(tiny, grids, out=out, say=lambda text: None)
    assert [r["status"] for r in result.rows] == ["trained", "trained"]
    first = json.loads((out / "lr=3e-3" / "summary.json").read_text())
    assert first["resumed_from"] == 4 and first["step"] == 12
    assert json.loads((out / "lr=1e-2" / "summary.json").read_text())["resumed_from"] is None
    # the same grid with more steps continues each finished point from its last checkpoint
    longer = sweep(tiny, grids, overrides=["train.steps=16"], out=out, say=lambda text: None)
    assert [(r["status"], r["step"]) for r in longer.rows] == [("trained", 16), ("trained", 16)]
    assert json.loads((out / "lr=1e-2" / "summary.json").read_text())["resumed_from"] == 12
    assert max(r["step"] for r in read_metrics(out / "lr=1e-2" / "metrics.jsonl")) == 16


@pytest.mark.parametrize("grid, expected", [
    ("train.lrr=1e-3,1e-2", "did you mean `lr`"),
    ("trian.lr=1e-3", "did you mean `train`"),
    ("model.mixers.attn.num_heads=2,3", "num_heads (3) must divide dim (16)"),
    ("train.lr=1e-3,-1", "train.lr"),
    ("model.mixers.attn.kind=attention,linear_atention", "did you mean `linear_attention`"),
])
def test_a_bad_grid_exits_2_before_anything_runs(tmp_path, tiny, grid, expected):
    out = tmp_path / "sweep"
    result = run_cli("sweep", tiny, "--grid", grid, "--out", out)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert not out.exists()


def test_sweep_needs_a_grid_a_task_and_one_metric(tmp_path, tiny):
    result = run_cli("sweep", tiny, "--grid", "x", "--out", tmp_path / "s")
    assert result.exit_code == 2 and "expected DOTTED.PATH=V1,V2" in result.stderr
    with pytest.raises(PulseError, match="at least one --grid"):
        sweep(tiny, [], out=tmp_path / "s")
    no_task = {k: v for k, v in recipe_dict().items() if k != "task"}
    with pytest.raises(PulseError, match="no \\[task\\] table"):
        sweep(write_recipe(tmp_path / "nt.toml", no_task), ["train.lr=1e-3"], out=tmp_path / "s")
    with pytest.raises(PulseError, match="share the run directory"):
        sweep(tiny, ['model.layout=["attn"],[ "attn" ]'], out=tmp_path / "s")
    with pytest.raises(PulseError, match="two grids"):
        sweep(tiny, ["train.lr=1e-3", "train.lr=1e-2"], out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_sweep_where_every_point_fails_exits_1(tmp_path, tiny):
    out = tmp_path / "sweep"
    result = run_cli("sweep", tiny, "--grid", "train.lr=9", "--set", "train.grad_clip=0", "--out", out, "-q",
                     env={INJECT: "2"})  # the loss of step 2 is NaN on every machine
    assert result.exit_code == 1, result.output
    doc, md = read_doc(out)
    assert doc["best"] is None and doc["points"][0]["status"] == "failed"
    assert "none (no point finished)" in result.stdout
    assert "(best)" not in md and "| lr=9 | 9 | — | —/12 |" in md
    assert "Every point ran with `--set train.grad_clip=0`, then its grid values." in md


def test_parallel_workers_train_every_point_resume_and_record_a_diverged_one(tmp_path, tiny):
    out = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt):  # lr=1e-2 stops at step 6, after its checkpoint at step 4
        sweep(tiny, ["train.lr=1e-2,9"], overrides=["train.grad_clip=0"], out=out,
              reporter=lambda point: Interrupt(at=6), say=lambda text: None)
    # the point lr=9 diverges at step 2, on every machine (its worker inherits the variable)
    result = run_cli("sweep", tiny, "--grid", "train.lr=1e-2,9", "--set", "train.grad_clip=0", "--parallel", "2",
                     "--out", out, env={INJECT: "2@lr=9"})
    assert result.exit_code == 0, result.output
    doc, md = read_doc(out)
    ok, bad = doc["points"]
    assert doc["workers"] == 2 and doc["best"] == "lr=1e-2" == ok["name"]
    assert ok["status"] == "trained" and ok["step"] == 12 and ok["value"] is not None
    summary = json.loads((out / "lr=1e-2" / "summary.json").read_text())
    assert summary["eval"]["accuracy"] == ok["value"] and summary["resumed_from"] == 4
    assert bad["status"] == "failed" and bad["value"] is None and "became" in bad["error"]
    assert "(train.log)" not in bad["error"] and (out / "lr=9" / "train.log").is_file()
    assert "| lr=9 |" in md and "failed" in md and "| lr=1e-2 **(best)** |" in md


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").is_dir(), reason="reads worker pids from /proc (Linux)")
def test_stopping_a_parallel_sweep_stops_its_workers(tmp_path, tiny):
    pulse_cli = Path(sys.executable).parent / "pulse"
    out = tmp_path / "sweep"
    proc = subprocess.Popen([str(pulse_cli), "sweep", str(tiny), "--grid", "train.lr=1e-3,1e-2", "--set",
                             "train.steps=100000", "--parallel", "2", "--out", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while len(children) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    try:
        assert len(children) == 2, proc.stdout.read() if proc.poll() is not None else children
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "interrupted" in output, output
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
        assert not (out / "sweep.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children:  # only a worker of this test that outlived the sweep (checked by its command line)
            with contextlib.suppress(OSError):
                if str(out) in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGKILL)


TINY = ["model.vocab_size=64", "task.vocab_size=64", "train.steps=3", "task.num_train=64", "task.num_test=32",
        "train.batch_size=8", "train.eval_every=0", "train.checkpoint_every=0", "train.warmup_steps=0",
        "train.max_time=600", "train.threads=1", "train.device=cpu"]


def test_recall_table_runs_sweeps_per_kind_and_width_then_reads_them_back(tmp_path):
    tool = load_tool("recall_table")
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    args = ["--settings", "16/2", "--kinds", "attention,linear_attention,no_such_kind", "--lrs", "1e-3,1e-2",
            "--dims", "8,16", "--out", str(runs), "--docs", str(docs), "--note", "tiny test",
            *(a for s in TINY for a in ("--set", s))]
    assert tool.main(args) == 0
    md = (docs / "recall.md").read_text()
    assert "**tiny test**" in md and "no_such_kind: not a registered mixer kind" in md
    assert "Load average when the sweeps started: " in md or not hasattr(os, "getloadavg")
    for kind in ("attention", "linear_attention"):
        doc = json.loads((runs / "mqar-16-2" / kind / "sweep.json").read_text())
        assert len(doc["points"]) == 4 and {p["status"] for p in doc["points"]} == {"trained"}
        for dim in ("8", "16"):
            best = max((p for p in doc["points"] if p["values"]["model.dim"] == dim), key=lambda p: p["value"])
            assert (f"| 16/2 | {kind} | {dim} | {best['value']:.4f} | {best['values']['train.lr']} | 1e-3, 1e-2 "
                    f"| {best['state_elements']:,} | {best['params']:,} | 3/3 |") in md
    # attention's state is its KV cache: 2 layers × (K, V) × 16 tokens × d
    assert "| 16/2 | attention | 8 |" in md and f"| {2 * 2 * 16 * 8:,} |" in md
    png = (docs / "recall.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    (docs / "recall.md").unlink()
    assert tool.main(["--read-only", "--settings", "16/2", "--kinds", "attention,linear_attention,mamba_x",
                      "--out", str(runs), "--docs", str(docs)]) == 0
    again = (docs / "recall.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| 16/2")]
    assert table and table == [line for line in again.splitlines() if line.startswith("| 16/2")]
    assert "mamba_x at 16/2: no sweep in" in again
    assert tool.main(["--read-only", "--settings", "64/4", "--kinds", "attention", "--out", str(runs),
                      "--docs", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


def test_recall_table_curriculum_starts_the_longer_setting_from_the_shorter_settings_best(tmp_path):
    tool = load_tool("recall_table")
    assert tool.overrides_for(["a=1", "32/4:b=2", "16/2:c=3", "d=x:y"], 32, 4) == ["a=1", "b=2", "d=x:y"]
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    args = ["--settings", "32/4,16/2", "--kinds", "attention", "--lrs", "1e-3,1e-2", "--curriculum",
            "--out", str(runs), "--docs", str(docs), *(a for s in TINY for a in ("--set", s)),
            "--set", "32/4:train.steps=2", "--set", "32/4:train.lr=3e-3"]
    assert tool.main(args) == 0
    short = json.loads((runs / "mqar-16-2" / "attention" / "sweep.json").read_text())
    best = max(short["points"], key=lambda p: p["value"])
    start = runs / "mqar-32-4" / "attention+from-16-2"
    assert json.loads((start / "curriculum.json").read_text())["dir"] == best["dir"]
    assert not (runs / "mqar-32-4" / "attention").exists()  # with --curriculum the longer setting only starts warm
    points = json.loads((start / "sweep.json").read_text())["points"]
    assert [p["values"]["train.lr"] for p in points] == ["3e-3"]  # the stage's own learning-rate grid
    for point in points:
        assert point["steps"] == 2  # the per-setting override won over the common one
        record = json.loads((Path(point["dir"]) / "init_from.json").read_text())
        assert record["from"] == best["dir"]
    md = (docs / "recall.md").read_text()
    assert "| 32/4 | attention (from 16/2) |" in md and "/2 + 3 at 16/2 |" in md and " s at 16/2 |" in md
    assert "| 3e-3 | 3e-3 |" in md  # one rate at that stage, and the table says so
    assert tool.main(["--read-only", "--settings", "16/2,32/4", "--kinds", "attention", "--out", str(runs),
                      "--docs", str(docs)]) == 0
    again = (docs / "recall.md").read_text()
    assert "| 32/4 | attention (from 16/2) |" in again and "attention at 32/4: no sweep in" in again


def test_zoology_protocol_trains_on_the_mixture_and_scores_every_test_setting(tmp_path):
    tool = load_tool("recall_table")
    zoo = load_tool("zoology")
    plan = zoo.budget_plan(0.5, 256)
    assert plan["mixture"][0] == (64, 4, 50_000) and plan["epochs"] == 16
    assert plan["steps"] == -(-90_000 // 256) * 16
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    args = ["--protocol", "zoology", "--budget", "0.0005", "--kinds", "linear_attention", "--dims", "8",
            "--lrs", "1e-3", "--batch", "16", "--test-examples", "4", "--out", str(runs), "--docs", str(docs),
            "--set", "train.threads=1", "--set", "train.device=cpu"]
    assert tool.main(args) == 0
    point = runs / "zoology" / "linear_attention" / "lr=1e-3,dim=8"
    recipe = json.loads((point / "recipe.json").read_text())
    assert recipe["task"]["mixture"] == [[64, 4, 50], [128, 8, 10], [256, 16, 10], [256, 32, 10], [256, 64, 10]]
    assert recipe["task"]["seq_len"] == 256 and recipe["train"]["steps"] == 6
    scores = json.loads((point / "zoology-tests.json").read_text())
    assert list(scores) == ["64/4", "64/8", "64/16", "128/32", "256/64", "512/128", "1024/256"]
    md = (docs / "zoology.md").read_text()
    row, = [line for line in md.splitlines() if line.startswith("| linear_attention |")]
    assert row.startswith("| linear_attention | 8 | 1e-3 | 1e-3 | " + " | ".join(f"{v:.3f}" for v in scores.values()))
    assert "Budget 0.0005 of Zoology's: 90 training examples" in md and "6 steps" in md
    assert (docs / "zoology.png").read_bytes().startswith(b"\x89PNG")
    assert tool.main([*args[:-4], "--read-only", "--docs", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "zoology.md").read_text().splitlines()[4:] == md.splitlines()[4:]
    assert tool.main(["--protocol", "zoology", "--budget", "2", "--out", str(runs), "--docs", str(docs)]) == 2


def test_text_table_compares_transformer_hybrid_and_pulse_at_the_same_steps_for_bytes_and_bpe(tmp_path):
    tool = load_tool("text_table")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"{i}.txt").write_text(f"document {i}: " + " ".join(f"word{(i * j) % 17}" for j in range(60)))
    tiny = ["model.dim=32", "train.steps=2", "train.warmup_steps=0", "train.eval_every=0", "train.checkpoint_every=0",
            "task.eval_windows=2", "train.batch_size=2", "task.seq_len=32", "train.threads=1", "train.device=cpu",
            f"task.path={json.dumps(str(corpus))}"]
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    assert tool.main(["--lrs", "1e-3", "--tokenizers", "bytes,bpe-300", "--out", str(runs), "--docs", str(docs),
                      "--note", "tiny", *(a for s in tiny for a in ("--set", s))]) == 0
    md = (docs / "text.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "bits/byte" not in line and "---" not in line]
    assert len(rows) == 6 and [r.split(" | ")[1] for r in rows] == ["bytes"] * 3 + ["bpe-300"] * 3
    assert "Transformer" in rows[0] and "hybrid" in rows[1] and "pure PULSE" in rows[2]
    for name, row in zip(("transformer", "hybrid", "pulse", "transformer-bpe-300"), rows):
        point, = json.loads((runs / name / "sweep.json").read_text())["points"]
        assert f"| {point['params']:,} | {point['state_elements']:,} | {point['value']:.4f} |" in row
        assert "| 2/2 |" in row
    assert rows[1].count(" %") == 1 and rows[4].count(" %") == 1 and "**tiny**" in md
    assert f"of {corpus}:" in md and "standard library" not in md  # the corpus the sweeps actually read
    assert (runs / "bpe-300.json").is_file() and "task.tokenizer" in (runs / "hybrid-bpe-300" / "sweep.md").read_text()
    assert tool.main(["--read-only", "--models", "transformer,nothing", "--out", str(runs),
                      "--docs", str(tmp_path / "x")]) == 2
    assert tool.main(["--read-only", "--models", "pulse", "--out", str(tmp_path / "empty"),
                      "--docs", str(tmp_path / "y")]) == 2 and not (tmp_path / "y").exists()


def test_a_stop_while_a_worker_starts_waits_until_the_worker_is_recorded():
    # a SIGTERM raised inside Popen would leave a started worker off the list that the sweep stops
    from pulse.experiments.sweep_workers import _Interrupts

    handler, recorded = _Interrupts(), []
    with pytest.raises(KeyboardInterrupt), handler.deferred():
        handler(signal.SIGTERM, None)  # arrives while the worker starts: noted, not raised
        recorded.append("worker")
    assert recorded == ["worker"] and not handler.pending
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGTERM, None)  # between starts: raised at once


@pytest.mark.audit("training stops", "clean")
def test_a_tool_stopped_by_a_signal_says_how_to_continue_without_a_traceback(capsys):
    import argparse

    from pulse.train.stop import Stopped

    tool = load_tool("recall_table")

    def stopped(args):
        raise Stopped("SIGTERM received: stopped after step 4 and saved runs/x/checkpoints/step-00000004", 15)

    code = tool.run_tool(argparse.ArgumentParser(), [], "recall_table", stopped, None)
    err = capsys.readouterr().err
    assert code == 143 and "Traceback" not in err
    assert "interrupted: SIGTERM received: stopped after step 4" in err and "run the same command again" in err
