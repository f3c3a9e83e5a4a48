"""`pulse bench`: the document it writes, process isolation, skips instead of crashes, the fit, the plot.

Behaviour only — no timing thresholds. Sizes are tiny so each measuring process costs
little more than its start-up.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from helpers import run_cli
from pulse import registry
from pulse.bench import (
    Settings,
    fit_scaling,
    local_exponents,
    measure,
    mixer_system,
    parse_lengths,
    parse_mixer,
    recipe_system,
    report,
    run_bench,
    with_compile,
    with_documents,
)
from pulse.bench.schema import DOCUMENT_SCHEMA
from pulse.errors import PulseError
from pulse.specs import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parent.parent
IMPOSSIBLE = 2**36  # a (1, 2³⁶, 16) float32 input alone is 4 TiB
TINY = dict(repeats=1, warmup=0, threads=1, matmul_size=32)
NO_CEILING = {**TINY, "matmul_size": 0}


def render(*tables) -> str:
    console = Console(record=True, width=200, file=open(os.devnull, "w"))
    for table in tables:
        console.print(table)
    return console.export_text()


@pytest.fixture(scope="module")
def doc():
    """Two attention variants at two real lengths and one impossible one, under a memory cap."""
    systems = [mixer_system("attention", 16), mixer_system("attention:num_heads=2", 16)]
    # guard off: the impossible length reaches a worker, whose allocator failure must become a skip
    settings = Settings(seq_lens=(8, 16, IMPOSSIBLE, 2 * IMPOSSIBLE), max_memory_gb=1.0, guard=False, **TINY)
    return run_bench(systems, settings, command="test")


def test_document_matches_schema_and_round_trips(doc, tmp_path):
    jsonschema.validate(doc, DOCUMENT_SCHEMA)
    report.write_json(doc, tmp_path / "bench.json")
    again = report.read_json(tmp_path / "bench.json")
    jsonschema.validate(again, DOCUMENT_SCHEMA)
    assert again == json.loads(json.dumps(doc))
    assert doc["baseline"] == "attention"
    assert [s["name"] for s in doc["systems"]] == ["attention", "attention:num_heads=2"]
    assert doc["machine"]["matmul"]["gflops"] > 0


def test_every_measurement_ran_in_its_own_fresh_process(doc):
    pids = [r["pid"] for r in doc["runs"] if "pid" in r] + [doc["machine"]["pid"]]
    assert len(pids) == len(set(pids)) == 1 + 2 * 3  # machine + 2 systems × (8, 16, impossible)
    assert os.getpid() not in pids


def test_systems_are_interleaved_and_ratios_taken_pair_by_pair(doc):
    order = [(r["seq_len"], r["system"]) for r in doc["runs"]]
    assert order[:4] == [
        (8, "attention"), (8, "attention:num_heads=2"), (16, "attention"), (16, "attention:num_heads=2")
    ]
    base, other = doc["systems"]
    for seq_len, i in ((8, 0), (16, 1)):
        a, b = doc["runs"][2 * i], doc["runs"][2 * i + 1]
        assert base["results"][i]["ratio"]["speedup"]["median"] == 1.0
        expected = statistics.median(a["times_s"]) / statistics.median(b["times_s"])
        assert math.isclose(other["results"][i]["ratio"]["speedup"]["median"], expected)
        assert other["results"][i]["tokens_per_s"] == pytest.approx(seq_len / other["results"][i]["time_s"]["median"])


def test_a_length_that_does_not_fit_is_skipped_not_a_crash(doc):
    for system in doc["systems"]:
        ok, oom, after = system["results"][1], system["results"][2], system["results"][3]
        assert ok["status"] == "ok"
        assert oom["status"] == "skipped" and "out of memory" in oom["reason"]
        assert after["status"] == "skipped" and "not tried" in after["reason"] and not after["pids"]
        assert system["scaling"]["seq_lens"] == [8, 16]
    text = report.render_text(doc)
    assert "out of memory" in text and "attention:num_heads=2" in text


def test_time_budget_and_timeouts_skip_with_reason():
    system = mixer_system("attention", 16)
    budget = run_bench([system], Settings(seq_lens=(8, 16), max_seconds=0.05, **TINY))
    jsonschema.validate(budget, DOCUMENT_SCHEMA)
    assert budget["machine"]["matmul"] is None
    assert all(r["status"] == "skipped" and "--max-seconds" in r["reason"] for r in budget["systems"][0]["results"])
    slow = run_bench([system], Settings(seq_lens=(8, 16), timeout=0.05, **TINY))
    first, second = slow["systems"][0]["results"]
    assert first["status"] == "skipped" and first["reason"].startswith("timeout")
    assert second["status"] == "skipped" and "not tried" in second["reason"]
    render(report.results_table(slow), report.scaling_table(slow))


def check_one_result(out: dict, mode: str) -> dict:
    """One system at one length, no matmul ceiling: valid, ok, and counted in the unit of its mode."""
    jsonschema.validate(out, DOCUMENT_SCHEMA)
    assert out["machine"]["matmul"] is None and "matmul-size 0" in out["machine"]["reason"]
    result = out["systems"][0]["results"][0]
    assert result["status"] == "ok", result
    assert result["unit"] == ("token" if mode == "generate" else "batch")
    assert result["matmul_fraction"] is None
    assert out["systems"][0]["params"] > 0 and result["flops"] > 0
    assert (mode == "generate") == ("prefill_s" in result)
    return result


def test_train_a_recipe():  # generating with a mixer: test_a_worker_reports_its_own_memory_…
    recipe = recipe_from_dict({"model": {"from": "transformer-small", "dim": 16, "depth": 1}}, source="tiny")
    check_one_result(run_bench([recipe_system(recipe)], Settings(seq_lens=(8,), mode="train", **NO_CEILING)), "train")


def test_cli_generates_from_a_recipe_and_writes_json_and_plot(tmp_path):
    recipe = ROOT / "recipes/transformer.toml"
    result = run_cli("bench", recipe, "--set", "model.dim=16", "--set", "model.depth=1", "--seq-lens", "8",
                     "--mode", "generate", "--generate-tokens", "2", "--repeats", "1", "--warmup", "0",
                     "--threads", "1", "--matmul-size", "0", "--json", tmp_path / "b.json",
                     "--plot", tmp_path / "b.png")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    jsonschema.validate(doc, DOCUMENT_SCHEMA)
    assert doc["systems"][0]["results"][0]["status"] == "ok"
    assert doc["settings"]["mode"] == "generate" and doc["command"].startswith(f"pulse bench {recipe} --seq-lens 8")
    assert "--set model.dim=16" in doc["command"]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_written_even_when_nothing_was_measured(doc, tmp_path):
    report.plot(doc, tmp_path / "sub" / "plot.png")
    assert (tmp_path / "sub" / "plot.png").stat().st_size > 0
    empty = json.loads(json.dumps(doc))
    for system in empty["systems"]:
        for r in system["results"]:
            r.update(status="skipped", reason="test")
    report.plot(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give a RECIPE"),
        (("recipes/transformer.toml", "--mixer", "attention"), "not both"),
        (("--mixer", "atention"), "did you mean `attention`"),
        (("--mixer", "attention:num_heads=3", "--dim", "16"), "num_heads"),
        (("--mixer", "attention", "--seq-lens", "8,x"), "not a length"),
        (("--mixer", "attention", "--mode", "backward"), "'backward' is not one of"),
    ],
)
def test_cli_user_mistakes_exit_2(args, message):
    result = run_cli("bench", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_recipe_bench_table_sets_defaults_and_cli_overrides():
    recipe = load_recipe(ROOT / "recipes/transformer.toml")
    settings = Settings.from_spec(recipe.bench)
    assert settings.seq_lens == tuple(recipe.bench.seq_lens) and settings.mode == recipe.bench.mode
    over = Settings.from_spec(recipe.bench, seq_lens=[64, 32, 64], mode="train", threads=None)
    assert over.seq_lens == (32, 64) and over.mode == "train" and over.threads is None


def test_bench_vs_paths_resolve_relative_to_the_recipe(tmp_path):
    from pulse.cli.bench import _vs_paths

    (tmp_path / "other.toml").write_text('[model]\nfrom = "transformer-small"\n')
    path = tmp_path / "main.toml"
    path.write_text('[model]\nfrom = "transformer-small"\n[bench]\nvs = ["other.toml"]\nseq_lens = [64, 16]\n')
    recipe = load_recipe(path)
    assert _vs_paths(recipe, path) == [tmp_path / "other.toml"]
    assert recipe.bench.seq_lens == [16, 64]


def test_parse_mixer_and_lengths():
    assert parse_mixer("attention") == ("attention", {})
    assert parse_mixer("attention:num_heads=2,bias=true") == ("attention", {"num_heads": 2, "bias": True})
    assert parse_mixer("x:sizes=[1,2],name=a") == ("x", {"sizes": [1, 2], "name": "a"})
    assert parse_lengths("512, 1k,16K,1m") == [512, 1024, 16384, 2**20]
    with pytest.raises(PulseError, match="num_heads"):
        mixer_system("attention:num_heads=5", 16)


@given(
    exponent=st.floats(0.25, 2.5),
    scale=st.floats(1e-6, 1e2),
    lens=st.lists(st.sampled_from([64, 128, 256, 512, 1024, 4096, 16384]), min_size=2, max_size=7, unique=True),
)
def test_fit_recovers_the_exponent_of_synthetic_timings(exponent, scale, lens):
    times = [scale * n**exponent for n in lens]
    fit = fit_scaling(lens, times)
    assert fit.exponent == pytest.approx(exponent, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.points == len(lens)
    assert fit.predict(lens[0]) == pytest.approx(times[0], rel=1e-9)
    assert local_exponents(lens, times) == pytest.approx([exponent] * (len(lens) - 1), rel=1e-9)


def test_fit_of_noisy_quadratic_and_degenerate_inputs():
    lens = [1024, 2048, 4096, 8192]
    times = [n**2 * f for n, f in zip(lens, (1.05, 0.95, 1.02, 0.98))]
    assert 1.9 < fit_scaling(lens, times).exponent < 2.1
    assert fit_scaling([1024], [1.0]) is None
    assert fit_scaling([1024, 1024], [1.0, 2.0]) is None
    assert fit_scaling([1024, 2048], [0.0, 1.0]) is None


# looking ahead: projected skips, ETA, warnings, paths, tables that fit


def test_guard_skips_lengths_projected_past_the_memory_cap_before_trying_them():
    system = mixer_system("attention", 16)
    out = run_bench([system], Settings(seq_lens=(IMPOSSIBLE,), **NO_CEILING))
    (first,) = out["systems"][0]["results"]
    assert first["status"] == "skipped" and first["reason"].startswith("needs at least") and not first["pids"]
    assert "default memory guard" in first["reason"]
    out = run_bench([system], Settings(seq_lens=(8, IMPOSSIBLE), max_memory_gb=1.0, **NO_CEILING))
    ok, big = out["systems"][0]["results"]
    assert ok["status"] == "ok" and ok["path"] == "eager" and out["systems"][0]["path"] == "eager"
    assert big["status"] == "skipped" and big["reason"].startswith("projected") and not big["pids"]
    jsonschema.validate(out, DOCUMENT_SCHEMA)


class Quadratic:
    """Formulas of a system whose work and memory grow as T² (attention's, at long lengths), for plan's arithmetic."""

    def work(self, length: int) -> float:
        return float(length) ** 2

    def memory(self, length: int) -> float:
        return float(length) ** 2

    def floor(self, length: int) -> float:
        return 0.0


def test_projection_and_eta_follow_the_measured_exponent():
    from pulse.bench import plan

    history = [{"status": "ok", "seq_len": 1024, "wall_s": 1.0, "memory_bytes": 2**20},
               {"status": "ok", "seq_len": 2048, "wall_s": 4.0, "memory_bytes": 2**21}]
    guess = plan.project(history, 8192, Quadratic())
    assert guess["wall_s"] == pytest.approx(64.0) and guess["exponent"] == pytest.approx(2.0)
    assert guess["memory_bytes"] == pytest.approx(2**23)  # memory fitted on the two lengths: linear, not T²
    settings = Settings(seq_lens=(8192,), timeout=60.0)
    reason = plan.check(Quadratic(), history, 8192, settings)
    assert "over --timeout 60 s (time ∝ T^2.00, from the lengths measured)" in reason
    # one length: the exponent is the system's own formulas', and the reason says so
    assert "T^2.00, from its blocks' FLOPs: one length measured so far" in plan.check(Quadratic(), history[1:], 8192,
                                                                                       settings)
    assert plan.check(Quadratic(), history, 4096, settings) is None
    formulas = {"a": Quadratic()}
    assert plan.eta({"a": history}, [("a", 4096), ("a", 8192)], None, timeout=60.0, formulas=formulas) == \
        pytest.approx(16.0)
    assert plan.eta({"a": []}, [("a", 4096)], None, timeout=60.0, formulas=formulas) is None
    assert plan.eta({"a": []}, [("a", 4096)], 3.0, timeout=60.0, formulas=formulas) == 3.0


def test_projection_scales_only_the_work_that_grows_with_the_length():
    # a short length is mostly process start-up (and, on a GPU, the CUDA context and compiling the
    # step functions): 30 s of it, scaled as T², would skip 8k for a process that takes 31 s
    from pulse.bench import plan

    short = {"status": "ok", "seq_len": 2048, "wall_s": 30.1, "scaling_s": 0.1}
    guess = plan.project([short], 8192, Quadratic())
    assert guess["exponent"] == pytest.approx(2.0) and guess["wall_s"] == pytest.approx(30.0 + 0.1 * 16)
    assert plan.check(Quadratic(), [short], 8192, Settings(seq_lens=(8192,), timeout=90.0)) is None
    # with two lengths the exponent comes from the scaling parts alone, not from start-up that stays flat
    longer = {"status": "ok", "seq_len": 4096, "wall_s": 30.4, "scaling_s": 0.4}
    guess = plan.project([short, longer], 16384, Quadratic())
    assert guess["exponent"] == pytest.approx(2.0) and guess["wall_s"] == pytest.approx(30.0 + 0.4 * 16)
    # a run from an older document, without scaling_s, is projected whole, as before
    assert plan.project([{"status": "ok", "seq_len": 2048, "wall_s": 30.1}], 8192, Quadratic())["wall_s"] == \
        pytest.approx(481.6)
    # memory likewise: 80 MiB of first-call set-up and 1 MiB of activations at 256 tokens is not 80 GiB at 8k
    mib = 2**20
    small = {"status": "ok", "seq_len": 256, "wall_s": 2.0, "memory_bytes": 81 * mib, "memory_fixed_bytes": 80 * mib}
    assert plan.project([small], 8192, Quadratic())["memory_bytes"] == pytest.approx(80 * mib + 1 * mib * 32**2)


@pytest.mark.parametrize("kind", registry.kinds("mixer"))
def test_one_measured_length_is_carried_to_the_next_by_the_blocks_own_formulas(kind):
    """With one length measured, the time exponent is the ratio of the system's FLOPs (its blocks'
    flops_per_token), not an exponent assumed for a kind: a block whose work per token grows with the context
    (attention) projects steeper than one whose work per token is flat (a recurrence)."""
    import torch

    from pulse.bench import plan
    from pulse.bench.measure import build_system

    model = build_system({"type": "mixer", "kind": kind, "dim": 16, "params": {}}, "meta", torch.float32)
    formulas = plan.SystemFormulas(model, batch=1, mode="forward", dtype="float32")
    per_token = [model.flops_per_token(n) for n in (2048, 8192)]
    guess = plan.project([{"status": "ok", "seq_len": 2048, "wall_s": 1.0, "memory_bytes": 2**20}], 8192, formulas)
    assert guess["exponent"] == pytest.approx(1 + math.log(per_token[1] / per_token[0]) / math.log(4), rel=1e-6)
    assert guess["fitted"] is False and guess["memory_bytes"] > 2**20
    # before any measurement: at least the state every block returns
    state = model.state_numel(2**20) * 4 if callable(getattr(model, "state_numel", None)) else 0
    assert formulas.floor(2**20) >= state + 4 * 16 * 2**20 * 4


def test_a_worker_reports_its_own_memory_the_part_of_its_time_that_scales_and_its_threads(monkeypatch):
    # execve folds the parent's high-water mark into the child's ru_maxrss: a runner holding 400 MiB
    # made every tiny worker report ~400 MiB minus its own resident set as "peak growth"
    for name in ("PULSE_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    ballast = b"x" * (400 * 2**20)
    out = run_bench([mixer_system("linear_attention", 16)],
                    Settings(seq_lens=(64,), mode="generate", generate_tokens=2, **{**NO_CEILING, "threads": None}))
    check_one_result(out, "generate")
    (run,) = out["runs"]
    assert run["status"] == "ok", run
    if os.path.exists("/proc/self/clear_refs"):  # elsewhere the peak is ru_maxrss, counted from the process start
        assert run["memory_bytes"] < 64 * 2**20, run["memory_bytes"]
    del ballast  # held until the worker has finished
    assert 0 < run["scaling_s"] < run["wall_s"]
    assert 0 <= run["memory_fixed_bytes"] <= run["memory_bytes"]  # the peak is at least the RSS after the short call
    # no --threads: the worker chose from the free CPUs (pulse.threads) and the report says what it used
    assert 1 <= run["threads"] <= os.cpu_count() and run["threads_how"] == "free CPUs"
    assert out["systems"][0]["results"][0]["threads"] == [run["threads"]]
    assert f"threads {run['threads']} of {os.cpu_count()} CPUs (free CPUs)" in report.machine_line(out)
    assert out["settings"]["threads"] is None and out["machine"]["threads"] is None


def test_busy_machine_and_wide_spread_warn(monkeypatch, doc):
    from pulse.bench import plan

    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 40.0, 40.0))
    assert "the machine is busy: load average 40.0" in plan.load_warning()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert plan.load_warning() is None
    wide = json.loads(json.dumps(doc))
    result = wide["systems"][1]["results"][0]
    result["times_s"] = [1.0, 2.0]
    result["time_s"] = {"median": 1.5, "min": 1.0, "max": 2.0}
    (warning,) = plan.spread_warnings(wide)
    assert "attention:num_heads=2 T=8 (67 %)" in warning


def test_80_column_render_cuts_no_name_and_the_text_report_is_whole(doc):
    long_names = json.loads(json.dumps(doc))
    long_names["systems"][1]["name"] = "attention:num_heads=2,dropout=0.0,bias=false"
    console = Console(record=True, width=80, file=open(os.devnull, "w"))
    report.render(long_names, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text.replace("8…16", "")  # "8…16" is the fitted range, not a cut
    # rows are letters; the legend spells each name out whole on one line, with its path
    assert any(line.strip().startswith("A │ attention ") for line in text.splitlines())
    assert any("attention:num_heads=2,dropout=0.0,bias=false" in line for line in text.splitlines())
    assert "│ B      │" in text
    whole = report.render_text(long_names)
    rows = [line for line in whole.splitlines() if "attention:num_heads=2,dropout" in line]
    assert len(rows) > 3 and "…" not in whole.replace("8…16", "")  # the full tables use full names


def test_compile_choices_name_and_mark_each_system():
    systems = [mixer_system("ntm", 8), mixer_system("attention", 8)]
    assert with_compile(systems, "auto") == systems
    assert [s.spec["compile"] for s in with_compile(systems, "off")] == [False, False]
    both = with_compile(systems, "both")
    assert [s.name for s in both] == ["ntm · eager", "ntm · compiled", "attention · eager", "attention · compiled"]
    assert [s.spec["compile"] for s in both] == [False, True, False, True]
    with pytest.raises(PulseError, match="--compile sometimes: choose one of auto, on, off, both"):
        with_compile(systems, "sometimes")


def test_cli_times_eager_and_compiled_side_by_side_and_names_a_failed_compile(tmp_path):
    # CXX names no compiler, so inductor fails in the "compiled" worker on every machine: what runs is
    # deterministic, and the report must say that this system fell back to eager and why (the compiled
    # path itself is checked against eager in tests/test_backend.py)
    result = run_cli("bench", "--mixer", "ntm:memory_slots=4,memory_width=3", "--dim", "8", "--seq-lens", "8",
                     "--mode", "train", "--repeats", "1", "--warmup", "1", "--threads", "1", "--matmul-size", "0",
                     "--compile", "both", "--json", tmp_path / "b.json", env={"CXX": str(tmp_path / "no-such-g++")})
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    paths = {s["name"]: s["path"] for s in doc["systems"]}
    assert list(paths) == ["ntm:memory_slots=4,memory_width=3 · eager", "ntm:memory_slots=4,memory_width=3 · compiled"]
    eager, compiled = paths.values()
    assert eager == "eager"
    # both halves of the NTM's token step (its forward and its hand-written backward) name the fallback
    for step in ("token_backward", "token_step"):
        assert f"NTMMemory.{step}: eager (compiled failed: " in compiled and "compiler" in compiled, compiled
    assert all(run["status"] == "ok" for run in doc["runs"])
    assert doc["command"].endswith("--compile both")


def test_results_that_cannot_be_written_are_saved_to_a_named_fallback(tmp_path):
    import json as _json
    import re

    from pulse.bench import report

    blocker = tmp_path / "file"
    blocker.write_text("x")
    doc = {"schema": "pulse.bench/1", "runs": []}
    with pytest.raises(PulseError, match="results are saved in") as info:
        report.save_results(doc, blocker / "out.json", report.write_json)
    fallback = re.search(r"saved in (\S+) —", str(info.value)).group(1)
    assert _json.loads(open(fallback).read()) == doc
    assert report.save_results(doc, tmp_path / "ok.json", report.write_json) == tmp_path / "ok.json"


def test_the_path_column_names_each_kernel_library_and_spells_out_fallbacks():
    from pulse.bench.plan import paths_summary

    runs = [{"paths": {"selective_scan": "mamba-ssm", "linear_attention": "fla"}},
            {"paths": {"selective_scan": "eager (continues a state: mamba-ssm's kernel starts from zero)"}}]
    assert paths_summary(runs) == (
        "fla + mamba-ssm + selective_scan: eager (continues a state: mamba-ssm's kernel starts from zero)"
    )
    assert paths_summary([{}]) == "eager"


def test_matmul_floor_records_every_projection_product_of_forward_and_backward():
    # tools/matmul_floor.py bounds the speed-up of any form of a mixer by its projections alone
    # (docs/benchmarks.md, "What bounds them"); it must find exactly the layer's 2-D products
    from helpers import load_tool

    floor = load_tool("matmul_floor")
    d, t = 16, 64
    result = floor.measure("linear_attention", d, t, repeats=1)
    # q/k/v and out projections: 8·t·d² forward, twice that backward (input and weight gradients)
    assert result["calls"] == 6 and result["gflop"] == pytest.approx(24 * t * d * d / 1e9)
    assert result["layer"] > 0 and result["products"] > 0


def test_the_guard_counts_a_recipes_logits_so_a_tiny_model_at_ten_million_tokens_is_refused(tmp_path):
    result = run_cli("bench", ROOT / "recipes/hybrid.toml", "--set", "model.dim=32", "--set", "model.depth=3",
                     "--seq-lens", "10000000", "--rounds", "1", "--matmul-size", "0")
    assert result.exit_code == 0, result.output
    assert "needs at least" in result.stdout and "default memory guard" in result.stdout, result.stdout


def test_documents_per_window_name_each_system_and_are_timed_side_by_side(tmp_path):
    systems = [mixer_system("gated_deltanet", 8), mixer_system("attention", 8)]
    assert with_documents(systems, [0]) == systems
    both = with_documents(systems, [0, 4])
    assert [s.name for s in both] == ["gated_deltanet · no docs", "gated_deltanet · 4 docs", "attention · no docs",
                                      "attention · 4 docs"]
    assert [s.spec.get("docs_per_window", 0) for s in both] == [0, 4, 0, 4]
    with pytest.raises(PulseError, match="counts ≥ 0"):
        with_documents(systems, [-1])
    starts = measure.document_starts(3, 50, 4, "cpu")
    assert starts.shape == (3, 50) and starts[:, 0].all() and starts.sum(dim=1).tolist() == [4, 4, 4]
    # the CLI's plan line, ETA, legend, JSON and text report, with versions and threads though no matmul ran
    result = run_cli("bench", "--mixer", "gated_deltanet:chunk_size=4", "--dim", "8", "--seq-lens", "8,16",
                     "--mode", "train", "--repeats", "1", "--warmup", "0", "--threads", "1", "--matmul-size", "0",
                     "--docs-per-window", "0,3", "--json", tmp_path / "b.json", "--text", tmp_path / "b.txt")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # lines that name a long system wrap at 80 columns
    assert "plan: 2 system(s) × 2 length(s) × 1 round(s) = 4 measuring processes" in out
    assert "· 1/4 · ETA" in out and "· 4/4 · done" in out
    assert "eager" in out and "gated_deltanet:chunk_size=4 · 3 docs" in out
    doc = json.loads((tmp_path / "b.json").read_text())
    machine = doc["machine"]
    assert machine["matmul"] is None and machine["threads"] == 1 and machine["torch"]
    assert "threads 1 of" in report.machine_line(doc) and "torch 2." in report.machine_line(doc)
    assert "(free CPUs)" not in report.machine_line(doc) and {r["threads"] for r in doc["runs"]} == {1}
    text = (tmp_path / "b.txt").read_text()
    assert "gated_deltanet:chunk_size=4 · 3 docs" in text and "pulse bench" in text
    assert [r["status"] for r in doc["runs"]] == ["ok"] * 4
    assert {s["name"]: s["path"] for s in doc["systems"]}["gated_deltanet:chunk_size=4 · 3 docs"] == \
        "delta_rule: eager (document starts)"
    assert "--docs-per-window 0,3" in doc["command"]
    bad = run_cli("bench", "--mixer", "attention", "--docs-per-window", "two")
    assert bad.exit_code == 2 and "whole numbers" in bad.output
    run_cli("bench", "--mixer", "attention", "--dim", "8", "--seq-lens", "4", "--threads", "1",
            "--matmul-size", "0", "--repeats", "1", "--docs-per-window", "9", "--json", tmp_path / "c.json")
    assert "do not fit a window of 4 tokens" in (tmp_path / "c.json").read_text()
