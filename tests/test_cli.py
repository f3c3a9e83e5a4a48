"""The CLI: happy paths print what they should; user mistakes exit 2 with one clear paragraph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER = ROOT / "recipes/transformer.toml"


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_build_prints_tree_and_params():
    result = run_cli("build", TRANSFORMER)
    assert result.exit_code == 0, result.output
    assert "CausalSelfAttention" in result.stdout and "total" in result.stdout


def test_build_out_writes_checkpoint(tmp_path):
    result = run_cli("build", TRANSFORMER, "--set", "model.dim=32", "--set", "model.depth=1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run/model.safetensors").is_file() and (tmp_path / "run/recipe.json").is_file()
    again = run_cli("summarize", tmp_path / "run", "--seq-len", "64", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["total_params"] > 0


def test_summarize_counts_match_and_state_grows_with_length():
    short = json.loads(run_cli("summarize", TRANSFORMER, "--seq-len", "128", "--json").stdout)
    long = json.loads(run_cli("summarize", TRANSFORMER, "--seq-len", "4096", "--json").stdout)
    assert short["total_params"] == long["total_params"] == sum(b["params"] for b in long["blocks"])
    assert long["state_bytes"] == 32 * short["state_bytes"]


def test_summarize_prints_torchinfo_table():
    result = run_cli("summarize", TRANSFORMER, "--seq-len", "4096")
    assert result.exit_code == 0, result.output
    assert "Total params" in result.stdout and "FLOPs/token" in result.stdout


def test_list_and_list_one_kind():
    result = run_cli("list")
    assert result.exit_code == 0 and "attention" in result.stdout and "rmsnorm" in result.stdout
    one = run_cli("list", "attention")
    assert one.exit_code == 0 and "num_heads" in one.stdout and "must divide" in one.stdout
    assert run_cli("list", "--role", "norm").stdout.count("norm") >= 2
    assert run_cli("list", "nothing-like-this").exit_code == 2


def test_schema_in_repo_is_current():
    result = run_cli("schema")
    assert result.exit_code == 0
    stored = (ROOT / "docs/recipe.schema.json").read_text()
    assert json.loads(result.stdout) == json.loads(stored), "run `pulse schema --out docs/recipe.schema.json`"


def test_schema_accepts_shipped_recipes_resolved():
    import jsonschema

    import pulse

    schema = json.loads(run_cli("schema").stdout)
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        jsonschema.validate(pulse.load_recipe(path).to_dict(), schema)


BAD = {
    "unknown key": (
        "[model]\nfrom = 'transformer-small'\ndpeth = 3\n", "model.dpeth: unknown key `dpeth` (did you mean `depth`?)"
    ),
    "unknown nested key": (
        "[model]\nfrom = 'transformer-small'\n[model.mixers.attn]\nnum_heds = 2\n",
        "model.mixers.attn.num_heds: unknown key `num_heds` (did you mean `num_heads`?)",
    ),
    "unknown kind": (
        "[model]\nfrom = 'transformer-small'\n[model.mixers.attn]\nkind = 'atention'\n",
        "unknown mixer kind `atention` (did you mean `attention`?)",
    ),
    "wrong type": (
        "[model]\nfrom = 'transformer-small'\ndepth = 'four'\n", "model.depth: must be a whole number, not 'four'"
    ),
    "cross-field": (
        "[model]\nfrom = 'transformer-small'\n[model.mixers.attn]\nnum_heads = 3\n",
        "model.mixers.attn: num_heads (3) must divide dim (256)",
    ),
    "layout name": ("[model]\nfrom = 'transformer-small'\nlayout = ['atn']\n", "model.layout: names mixer `atn`"),
    "empty layout": ("[model]\nfrom = 'transformer-small'\nlayout = []\n", "layout is empty"),
    "missing card": (
        "[model]\nfrom = 'transformer-smal'\n",
        "no zoo card named `transformer-smal` (did you mean `transformer-small`?)",
    ),
    "no model": ("[train]\nsteps = 3\n", "no [model] table"),
    "bad toml": ("[model\nfrom = 1\n", "not valid TOML"),
    "unknown section": ("[model]\nfrom = 'transformer-small'\n[trian]\nsteps = 1\n", "`trian` (did you mean `train`?)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_exits_2_with_clear_message(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    for command in (["build", path], ["validate", path], ["summarize", path]):
        result = run_cli(*command)
        assert result.exit_code == 2, (case, command, result.output)
        assert "Traceback" not in result.output
        assert expected in " ".join(result.stderr.split()), result.stderr


def test_missing_file_exits_2(tmp_path):
    result = run_cli("build", tmp_path / "nope.toml")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_bad_override_exits_2():
    result = run_cli("build", TRANSFORMER, "--set", "model.depth")
    assert result.exit_code == 2 and "DOTTED.PATH=VALUE" in result.stderr
    result = run_cli("build", TRANSFORMER, "--set", "model.mixers.attn.num_heads=7")
    assert result.exit_code == 2 and "must divide dim" in result.stderr


def test_validate_many_reports_each_and_fails(tmp_path):
    bad = write(tmp_path, BAD["unknown key"][0])
    result = run_cli("validate", TRANSFORMER, bad)
    assert result.exit_code == 2
    assert "✓" in result.stdout and "1 of 2 recipe(s) failed" in " ".join(result.stderr.split())


def test_console_script_is_installed():
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "pulse")
    assert Path(exe).exists(), "the `pulse` console script is missing beside python; install with pip install -e ."
    out = subprocess.run([exe, "validate", str(TRANSFORMER)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    bad = subprocess.run([exe, "build", "no/such.toml"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
