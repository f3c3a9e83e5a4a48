"""`pulse eval task|harness|context|passkey`: one sub-command per evaluation, each with its own options, and the
flags of old (`pulse eval RUN`, `--context-curve`, `--passkey`, `--harness`) routed to them, output unchanged."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from typer.main import get_command

import pulse
from helpers import run_cli
from pulse import registry
from pulse.cli import app
from test_eval_limits import tiny_checkpoint

PACKAGE = Path(pulse.__file__).parent
TIMINGS = {"seconds", "tokens_per_s", "took_seconds", "projected", "reason"}  # what a second run measures anew


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("cli-eval"))


def _untimed(doc):
    """The JSON without what depends on the clock."""
    if isinstance(doc, dict):
        return {k: _untimed(v) for k, v in doc.items() if k not in TIMINGS}
    if isinstance(doc, list):
        return [_untimed(v) for v in doc]
    return doc


def _json(*args) -> dict:
    shown = run_cli("eval", *args, "--json")
    assert shown.exit_code == 0, shown.output
    return _untimed(json.loads(shown.stdout))


@pytest.mark.filterwarnings("ignore::pulse.errors.PulseWarning")  # the stored corpus path, said once per run
def test_the_flags_of_old_give_the_same_json_as_the_sub_commands(checkpoint):
    held_out = _json("task", checkpoint)
    assert held_out["metrics"]["loss"] > 0
    assert _json(checkpoint) == held_out == _json("--model", checkpoint) == _json("task", "--model", checkpoint)
    curve = _json("context", checkpoint, "16,32", "--windows", "2")
    assert [p["length"] for p in curve["points"]] == [16, 32]
    assert _json(checkpoint, "--context-curve", "16,32", "--windows", "2") == curve
    assert _json(checkpoint, "--windows=2", "--context-curve=16,32") == curve
    grid = _json("passkey", checkpoint, "200", "--depths", "0,1", "--trials", "1")
    assert [(c["length"], c["depth"]) for c in grid["cells"]] == [(200, 0.0), (200, 1.0)]
    assert _json(checkpoint, "--passkey", "200", "--depths", "0,1", "--trials", "1") == grid


def test_the_harness_flag_is_the_harness_sub_command(checkpoint, monkeypatch):
    seen = []

    def harness(lm, tasks, **options):  # lm-eval itself is tests/test_harness.py's; here only the routing
        seen.append((tasks, options))
        return {"results": {task: {"acc,none": 0.5} for task in tasks}, "versions": {}}

    monkeypatch.setattr("pulse.evaluation.harness.run_harness", harness)
    new = _json("harness", checkpoint, "pulse_arith_mc", "--limit", "3", "--batch-size", "2")
    assert new["results"] == {"pulse_arith_mc": {"acc,none": 0.5}}
    assert Path(new["written"]) == checkpoint / "harness" / "pulse_arith_mc.json"
    assert _json(checkpoint, "--harness", "pulse_arith_mc", "--limit", "3", "--batch-size", "2") == new
    assert seen[0] == seen[1] == (["pulse_arith_mc"], {"include_path": None, "limit": 3, "num_fewshot": None,
                                                       "batch_size": 2, "online": False})


def test_each_sub_command_has_only_its_own_options():
    commands = get_command(app).commands["eval"].commands
    own = {name: {o for p in c.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")}
           - {"--set", "--json", "--allow-unverified"} for name, c in commands.items()}
    assert own == {"task": {"--task", "--batch-size"},
                   "harness": {"--include-path", "--limit", "--num-fewshot", "--batch-size", "--online"},
                   "context": {"--task", "--windows", "--max-seconds"},
                   "passkey": {"--depths", "--trials", "--max-seconds"}}
    for name in commands:
        shown = run_cli("eval", name, "-h")
        assert shown.exit_code == 0 and f"pulse eval {name}" in shown.stdout
        for other in set().union(*own.values()) - own[name]:
            assert other not in shown.stdout, (name, other)


@pytest.mark.parametrize("args, message", [
    (["passkey", "{run}", "200", "--windows", "2"],
     "--windows is an option of `pulse eval context`, not of `pulse eval passkey`; drop it, or give "
     "`pulse eval context`"),
    (["task", "{run}", "--depths", "0"], "--depths is an option of `pulse eval passkey`, not of `pulse eval task`"),
    (["context", "{run}", "16", "--batch-size", "2"],
     "--batch-size is an option of `pulse eval harness` and `pulse eval task`, not of `pulse eval context`"),
    (["harness", "{run}", "pulse_arith_mc", "--limit", "2.5"], "--limit 2.5: give a number of documents"),
    (["context", "{run}", "abc"], "--context-curve `abc`: `abc` is not a length"),
    (["passkey", "{run}", "0"], "--passkey: 0 is not a length"),
    (["passkey", "{run}", "200", "--depths", "0,2"], "--depths `0,2`: write depths between 0 and 1"),
    (["{run}", "--passkey"], "--passkey needs a value: --passkey LENGTHS"),
    (["{run}", "--harness", "x", "--context-curve", "16"], "--context-curve and --harness: give one evaluation at a "
                                                           "time"),
])
def test_a_wrong_option_is_one_clear_error_with_exit_code_2(checkpoint, args, message):
    shown = run_cli("eval", *(str(checkpoint) if a == "{run}" else a for a in args))
    assert shown.exit_code == 2, shown.output
    assert message in " ".join(shown.stderr.split()), shown.output
    assert "Traceback" not in shown.output


@pytest.mark.parametrize("args", [["context", "{run}"], ["harness", "{run}"], ["passkey"], ["task"]])
def test_a_missing_argument_is_a_usage_error(checkpoint, args):
    shown = run_cli("eval", *(str(checkpoint) if a == "{run}" else a for a in args))
    assert shown.exit_code == 2 and "Missing argument" in shown.output, shown.output


@pytest.mark.filterwarnings("ignore::pulse.errors.PulseWarning")
def test_a_run_directory_named_like_a_sub_command_is_written_as_a_path(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(checkpoint, tmp_path / "task")
    clash = run_cli("eval", "task", "--json")  # the sub-command wins, and says how to name the directory
    assert clash.exit_code == 2
    text = " ".join(clash.stderr.split())
    assert "`task` names the sub-command `pulse eval task` and also a path here" in text and "./task" in text, text
    assert _json("./task") == _json("task", "task") == _json("task", "./task")
    shutil.copytree(checkpoint, tmp_path / "passkey")
    assert run_cli("eval", "passkey", "--trials", "1").exit_code == 2
    assert _json("passkey", "passkey", "200", "--trials", "1", "--depths", "0")["cells"]


# "will this length take too long?" is answered by the blocks' cost formulas, never by a mixer's kind
ROOMS = ("cli", "bench", "evaluation", "experiments")


def kind_comparisons(source: str) -> list[str]:
    """Comparisons of something named `kind` with a registered kind's name (`kind == "attention"`,
    `m.kind in ("attention", …)`), as source text."""
    kinds = {entry.kind for entry in registry.entries() if entry.role != "task"}  # a block's kind, not a task's
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or "kind" not in ast.unparse(node):
            continue
        names = []
        for side in (node.left, *node.comparators):
            items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            names += [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
        if kinds & set(names):
            found.append(ast.unparse(node))
    return found


def test_no_projection_or_check_above_the_blocks_asks_a_mixers_kind():
    assert kind_comparisons('attention = any(getattr(m, "kind", "") == "attention" for m in mixers)')
    assert kind_comparisons('if block.kind in ("mamba2", "attention"): pass')
    assert not kind_comparisons('if recipe.task.kind != "text": pass')  # a task kind is not a block's
    for room in ROOMS:
        for path in sorted((PACKAGE / room).rglob("*.py")):
            assert not kind_comparisons(path.read_text()), (path, kind_comparisons(path.read_text()))
