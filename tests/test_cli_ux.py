"""What a new user meets: cards by name, pulse cp, CLI conventions (-h, --version, completion,
flag advice, the `info` alias), greedy-by-default generate, and tables that fit 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import typer.completion

import pulse
from helpers import run_cli
from pulse.cli import app
from pulse.errors import PulseError
from pulse.specs.load import card_names, recipe_names

ROOT = Path(__file__).resolve().parent.parent
CARDS = card_names()


def whole(name: str, text: str) -> bool:
    """`name` appears uncut: not run into other name characters and not followed by an ellipsis."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.…])", text) is not None


def fits(text: str) -> None:
    assert max(len(line) for line in text.splitlines()) <= 80


# cards as first-class names


def test_list_shows_cards_with_params_and_description_beside_kinds():
    result = run_cli("list")
    assert result.exit_code == 0, result.output
    assert "registered kinds" in result.stdout and "zoo cards" in result.stdout
    for card in pulse.api.cards.list_cards():
        assert whole(card.name, result.stdout), card.name
        assert card.description.split()[0] in result.stdout
        assert f"{card.params / 1e6:.2f}M" in result.stdout or f"{card.params / 1e3:.2f}k" in result.stdout


def test_list_cards_glob_and_one_card_in_full():
    only = run_cli("list", "--cards", "*hybrid*")
    assert only.exit_code == 0, only.output
    assert whole("pulse-hybrid-small", only.stdout) and whole("hybrid-zoo", only.stdout)
    assert not whole("pulse-small", only.stdout) and "registered kinds" not in only.stdout
    one = run_cli("list", "pulse-small")
    assert one.exit_code == 0 and "zoo card" in one.stdout and "[model.mixers.pulse]" in one.stdout
    missing = run_cli("list", "--cards", "*nothing*")
    assert missing.exit_code == 2 and "no zoo card matches" in missing.stderr


def test_python_list_models_and_create_model():
    assert pulse.list_models("*pulse*") == ["pulse-delta-small", "pulse-hybrid-small", "pulse-routed-small",
                                            "pulse-small"]
    assert pulse.list_models() == CARDS
    model = pulse.create_model("pulse-small", depth=1, device="meta")
    assert len(model.layers) == 1
    nested = pulse.create_model("pulse-small", device="meta", **{"depth": 1, "mixers.pulse.chunk_size": 8})
    assert nested.spec.mixers["pulse"].chunk_size == 8
    assert type(pulse.build_model("pulse-small", device="meta")).__name__ == type(model).__name__
    with pytest.raises(PulseError, match="did you mean `pulse-small`"):
        pulse.build_model("pulse-smal")
    with pytest.raises(PulseError, match="unknown key `dpeth`"):
        pulse.create_model("pulse-small", dpeth=2)


def test_create_model_from_a_checkpoint_has_its_weights(tmp_path):
    small = pulse.create_model(ROOT / "recipes/transformer.toml", dim=32, depth=1)
    pulse.save_checkpoint(small, pulse.load_recipe(ROOT / "recipes/transformer.toml",
                                                   ["model.dim=32", "model.depth=1"]), tmp_path / "ck")
    again = pulse.create_model(tmp_path / "ck")
    for (name, a), (_, b) in zip(small.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(PulseError, match=r"--set model.depth=2 cannot apply here: the stored weights fix"):
        pulse.create_model(tmp_path / "ck", depth=2)


@pytest.mark.parametrize("command", [["build", "--depth", "0"], ["summarize", "--json"], ["validate"]])
def test_commands_take_card_and_recipe_names(command):
    for name in ("pulse-small", "transformer"):
        result = run_cli(command[0], name, *command[1:])
        assert result.exit_code == 0, (name, result.output)
    wrong = run_cli(command[0], "pulse-smal", *command[1:])
    assert wrong.exit_code == 2 and "did you mean `pulse-small`" in " ".join(wrong.stderr.split())


def test_cp_copies_card_or_recipe_and_refuses_to_overwrite(tmp_path):
    dest = tmp_path / "mine.toml"
    result = run_cli("cp", "pulse-small", dest)
    assert result.exit_code == 0, result.output
    assert dest.read_bytes() == (ROOT / "zoo/pulse-small.toml").read_bytes()
    assert pulse.load_recipe(dest).model.depth == 4
    dest.write_text("# my edits\n")
    again = run_cli("cp", "pulse-small", dest)
    assert again.exit_code == 2 and "--force" in again.stderr and dest.read_text() == "# my edits\n"
    forced = run_cli("cp", "mqar-hybrid", dest, "--force")
    assert forced.exit_code == 0 and dest.read_bytes() == (ROOT / "recipes/mqar-hybrid.toml").read_bytes()
    into_dir = run_cli("cp", "transformer-small", tmp_path)
    assert into_dir.exit_code == 0 and (tmp_path / "transformer-small.toml").is_file()
    unknown = run_cli("cp", "pulse-smol", tmp_path / "x.toml")
    assert unknown.exit_code == 2 and "did you mean `pulse-small`" in unknown.stderr
    assert not (tmp_path / "x.toml").exists()


# CLI conventions


def _commands() -> list[str]:
    from typer.main import get_command

    return sorted(get_command(app).commands)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_dash_h(command):
    short, long = run_cli(command, "-h"), run_cli(command, "--help")
    assert short.exit_code == long.exit_code == 0, short.output
    assert short.stdout == long.stdout and "Usage" in short.stdout


def test_version_and_completion_script(monkeypatch):
    version = run_cli("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"pulse {pulse.__version__}"
    # --show-completion is a flag that asks the parent process which shell it is; under nohup or an
    # IDE no shell is found, so the test says it is bash (typer's own detection hook)
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    script = run_cli("--show-completion")
    assert script.exit_code == 0 and "_PULSE_COMPLETE" in script.stdout and "complete " in script.stdout
    words = run_cli(env={"_PULSE_COMPLETE": "complete_bash", "COMP_WORDS": "pulse build pulse-", "COMP_CWORD": "2"})
    assert words.stdout.split() == pulse.list_models("pulse-*")
    commands = run_cli(env={"_PULSE_COMPLETE": "complete_bash", "COMP_WORDS": "pulse summ", "COMP_CWORD": "1"})
    assert commands.stdout.split() == ["summarize"]


ADVICE = {
    "recipe key": (["train", "transformer", "--steps", "100"], "use --set train.steps=100"),
    "model key": (["build", "transformer", "--dim=64"], "use --set model.dim=64"),
    "typo": (["summarize", "transformer", "--seq-lenn", "8"], "did you mean --seq-len?"),
    "hf sampling": (["generate", "transformer", "--do-sample"], "use --sample"),
    "length": (["generate", "transformer", "--max-tokens", "9"], "--max-new-tokens"),
    "fine-tune": (["train", "transformer", "--pretrained", "runs/x"], "--init RUN"),
    "output": (["build", "transformer", "--output", "x"], "use --out"),
}


@pytest.mark.parametrize("case", sorted(ADVICE))
def test_unknown_flags_name_the_flag_that_does_it(case):
    args, advice = ADVICE[case]
    result = run_cli(*args)
    assert result.exit_code == 2
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert advice in text, text


def test_commands_from_other_tools_are_answered_with_ours():
    result = run_cli("finetune", "transformer")
    assert result.exit_code == 2 and "pulse train RECIPE --init RUN" in " ".join(result.output.split())
    typo = run_cli("summarise", "transformer")
    assert typo.exit_code == 2 and "summarize" in typo.output


def test_the_original_pulse_command_lines_run_as_written(tmp_path, monkeypatch):
    """The seed README's command-line section, with a TOML recipe (#29 item 1)."""
    from test_benchmark import SMALL
    from test_train import recipe_dict, write_recipe

    monkeypatch.chdir(tmp_path)
    assert run_cli("build", "transformer", "--out", "output").exit_code == 0
    write_recipe(tmp_path / "pulse_base.toml", recipe_dict(steps=2, eval_every=0))
    trained = run_cli("train", "--config", "pulse_base.toml", "--output-dir", "./trained", "-q")
    assert trained.exit_code == 0 and (tmp_path / "trained" / "summary.json").is_file(), trained.output
    yaml = run_cli("train", "--config", "configs/pulse_base.yaml", "--output-dir", "./output")
    assert yaml.exit_code == 2 and "recipes are TOML, not YAML" in yaml.output and "Traceback" not in yaml.output
    text = run_cli("generate", "--model", "./output/model.pt", "--prompt", "Hello world", "--max-length", "20")
    assert text.exit_code == 0 and "9 new tokens" in text.output  # 20 in all: the 11 prompt bytes and 9 new
    info = run_cli("info", "--model", "./output/model.pt", "--json")
    assert info.exit_code == 0 and info.stdout == run_cli("summarize", "output", "--json").stdout
    bench = run_cli("benchmark", "--task", "lra", "--model", "./output/model.pt", "--only", "listops",
                    "--budget", "0.0005", "--out", "bench", "-q", *(a for v in SMALL for a in ("--set", v)))
    assert bench.exit_code == 0 and (tmp_path / "bench" / "benchmark.md").is_file(), bench.output
    converted = run_cli("convert", "--input", "output", "--output", "model.onnx", "--format", "onnx")
    assert converted.exit_code == 0 and (tmp_path / "model.onnx").is_file()


def test_seed_spellings_are_aliases_in_help_and_given_once():
    help_text = " ".join(run_cli("train", "-h").output.split())
    assert "--config RECIPE or --model RECIPE means the same" in help_text and "--out,--output-dir" in help_text
    twice = run_cli("generate", "transformer", "--model", "transformer")
    assert twice.exit_code == 2 and "give it once" in " ".join(twice.output.split())
    both = run_cli("generate", "transformer", "--max-length", "20", "--max-new-tokens", "3")
    assert both.exit_code == 2 and "give one" in both.output


def test_info_is_summarize():
    a, b = run_cli("info", "transformer", "--json"), run_cli("summarize", "transformer", "--json")
    assert a.exit_code == 0 and a.stdout == b.stdout
    assert "pulse info" in run_cli("--help").stdout


# generate: one default in the CLI and in Python


def test_generate_is_greedy_by_default_and_samples_when_asked(tmp_path):
    build = run_cli("build", "transformer", "--set", "model.dim=32", "--set", "model.depth=1", "--out", tmp_path / "m")
    assert build.exit_code == 0, build.output
    model = pulse.PulseForCausalLM.from_pretrained(tmp_path / "m")
    greedy = model.tokenizer.decode(model.generate(torch.tensor([list(b"ab")]), 16, do_sample=False)[0])
    default = run_cli("generate", tmp_path / "m", "-p", "ab", "-n", "16")
    assert default.exit_code == 0 and default.stdout == greedy + "\n"
    assert run_cli("generate", tmp_path / "m", "-p", "ab", "-n", "16", "--top-k", "1").stdout == default.stdout
    hot = [run_cli("generate", tmp_path / "m", "-p", "ab", "-n", "16", "--temperature", "50", "--seed", str(s)).stdout
           for s in (1, 1, 2)]
    assert hot[0] == hot[1] != hot[2] and hot[0] != default.stdout
    sampled = run_cli("generate", tmp_path / "m", "-p", "ab", "-n", "16", "--sample", "--seed", "1")
    assert sampled.exit_code == 0 and sampled.stdout != default.stdout
    zero = run_cli("generate", tmp_path / "m", "-p", "ab", "--temperature", "0")
    assert zero.exit_code == 2 and "greedy" in zero.stderr


# tables that fit 80 columns


def test_list_tables_fit_80_columns_without_cutting_names():
    from pulse import registry
    from pulse.specs.recipe import spec_class

    listing = run_cli("list")
    fits(listing.stdout)
    for entry in registry.entries():
        assert whole(entry.kind, listing.stdout), entry.kind
        one = run_cli("list", entry.kind)
        assert one.exit_code == 0, one.output
        fits(one.stdout)
        assert "PydanticUndefined" not in one.stdout
        for field in spec_class(entry.kind).model_fields:
            assert field == "kind" or whole(field, one.stdout), (entry.kind, field)
    required = run_cli("list", "simple_pulse").stdout
    assert re.search(r"input_dim\s+int\s+required", required)


@pytest.mark.parametrize("card", CARDS)
def test_build_and_summarize_tables_fit_80_columns(card):
    from pulse.summarize import block_costs

    model = pulse.build_model(card, device="meta")
    blocks = [row.name.removeprefix("stack.") for row in block_costs(model, seq_len=1)]  # shown under the stack
    build = run_cli("build", card)
    assert build.exit_code == 0, build.output
    fits(build.stdout)
    summary = run_cli("summarize", card, "--seq-len", "64", "--depth", "3")
    assert summary.exit_code == 0, summary.output
    fits(summary.stdout)
    assert "Units." not in summary.stdout and "Total params" in summary.stdout
    for name in blocks:
        assert whole(name, build.stdout) and whole(name, summary.stdout), name
    if model.spec.tie_embeddings:
        assert "head Linear tied to embed.weight, 0 new params" in build.stdout
        assert re.search(r"head\s+Linear\s+0 \(tied to embed.weight\)", build.stdout)
        assert re.search(r"head\s+Linear\s+1×64×\d+\s+tied", summary.stdout)


def test_recipe_names_include_the_shipped_recipes():
    assert {"hybrid", "transformer", "mqar-hybrid"} <= set(recipe_names())
    assert json.loads(run_cli("summarize", "hybrid", "--json").stdout)["total_params"] > 0


def test_python_dash_m_pulse_runs_the_command():
    # what tools/gpu_bench.sh runs on a machine where the source tree is on PYTHONPATH but not installed
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pulse", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"pulse {pulse.__version__}", done.stderr


def test_cp_into_a_missing_folder_is_refused_not_created(tmp_path):
    for dest, message in ((tmp_path / "nodir" / "x.toml", "does not exist; create it first"),
                          (tmp_path / "nodir", "neither a recipe file to write nor a folder")):
        result = run_cli("cp", "pulse-small", dest)
        assert result.exit_code == 2 and message in " ".join(result.stderr.split()), result.output
    assert not (tmp_path / "nodir").exists()
    assert run_cli("cp", "pulse-small", tmp_path).exit_code == 0 and (tmp_path / "pulse-small.toml").is_file()


@pytest.mark.parametrize("command, option, values", [
    (["bench"], "--mode", "forward|train|generate"), (["bench"], "--dtype", "float32|float64|bfloat16|float16"),
    (["bench"], "--compile", "auto|on|off|both"), (["viz"], "--only", "all|states|attention"),
    (["list"], "--role", "mixer|mlp|norm|positional|model|task"), (["export"], "--format", "onnx|hf"),
    (["tokenizer", "train"], "--format", "auto|text|jsonl|parquet|dataset"),
])
def test_options_with_a_fixed_set_of_values_list_them_in_help(command, option, values):
    shown = run_cli(*command, "--help", env={"COLUMNS": "200"})
    line = next(line for line in shown.stdout.splitlines() if line.strip(" │").startswith(option))
    assert f"<{values}>" in line, line
