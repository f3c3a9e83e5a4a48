"""The house plan: imports point one way, a kind is written once, blocks raise PulseError."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

import pulse
from pulse import contract, registry
from toy_mixer import RunningMean, register

PACKAGE = Path(pulse.__file__).parent

# room → rooms it must never import (directly or inside a function)
TOP = {"visualization", "export"}  # user-facing tools beside the CLI, above the facade
FORBIDDEN = {
    "ops": {"specs", "blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint"},
    "blocks": {"specs", "models", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint"},
    "models": {"specs", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint"},
    "specs": {"blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint"},
    "checkpoint": {"blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli"},
    "runfiles": {"blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli"},
    "data": {"blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli"},
    "hf": {"train", "bench", "cli"},
    "registry": {"specs", "blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint"},
    "assemble": {"api", "tasks", "train", "bench", "cli"},
    "tasks": {"assemble", "api", "train", "bench", "cli"},
    "api": {"train", "bench", "cli", "hf"},
    "train": {"cli"},
    "bench": {"cli"},
    "units": {"ops", "specs", "blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint",
              "registry", "data", "hf", "contract"},
    "threads": {"ops", "specs", "blocks", "models", "assemble", "api", "tasks", "train", "bench", "cli", "checkpoint",
                "registry", "data", "hf", "contract", "units"},
}
for _room in FORBIDDEN:
    FORBIDDEN[_room] |= TOP


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "pulse"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pulse" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_point_one_way(room):
    files = [PACKAGE / f"{room}.py"] if (PACKAGE / f"{room}.py").exists() else sorted((PACKAGE / room).rglob("*.py"))
    assert files, room
    for path in files:
        bad = _imported_rooms(path) & FORBIDDEN[room]
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}, against docs/architecture.md"


# --- Adding a mixer: one block file, one spec, one registration line ---------------------------


@pytest.fixture
def running_mean_kind():
    here = "running_mean" in registry.kinds("mixer")  # registered for the whole session (PULSE_TEST_REGISTER)
    if not here:
        register()  # the one line: registry.register("running_mean", role="mixer", spec=…, module=…)
    yield
    if not here:
        registry.unregister("running_mean")


def test_a_new_mixer_is_one_block_one_spec_one_line(running_mean_kind):
    recipe = pulse.recipe_from_dict({"model": {"dim": 16, "depth": 2, "layout": ["m"],
                                               "mixers": {"m": {"kind": "running_mean", "decay": 0.5}}}})
    model = pulse.build_model(recipe)
    assert [type(layer.mixer) for layer in model.layers] == [RunningMean, RunningMean]
    assert model.layers[0].mixer.decay == 0.5
    layer = pulse.build_mixer("running_mean", 8, dtype=torch.float64)
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    contract.check_step(layer, x)
    contract.check_causal(layer, x, 3)
    with pytest.raises(pulse.PulseError, match="decay"):
        pulse.build_mixer("running_mean", 8, decay=2.0)


REGISTRY_WIDE = ("test_mixer_properties.py", "test_architecture.py", "test_generate.py", "test_hf.py",
                 "test_cli_ux.py", "test_registry.py")


def test_a_new_kind_is_covered_by_the_registry_wide_tests_unedited():
    """Registered before collection (PULSE_TEST_REGISTER), the toy mixer runs through every registry-wide test
    — the contract, documents, export, generation — with no edit to any of them."""
    import os
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    env = {**os.environ, "PULSE_TEST_REGISTER": "toy_mixer", "HYPOTHESIS_PROFILE": "ci"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "running_mean",
                           *(str(here / f) for f in REGISTRY_WIDE)], env=env, cwd=here.parent, capture_output=True,
                          text=True, timeout=600)
    tail = done.stdout[-3000:]
    assert done.returncode == 0, tail
    assert int(re.search(r"(\d+) passed", tail).group(1)) >= 10, tail


def test_the_example_kind_leaves_the_registry_as_it_was(running_mean_kind):
    assert "running_mean" in registry.kinds("mixer")


def test_renamed_recipe_keys_say_what_they_became():
    with pytest.raises(pulse.PulseError, match="`num_states` was renamed `num_slots`"):
        pulse.recipe_from_dict({"model": {"layout": ["p"], "mixers": {"p": {"kind": "pulse", "num_states": 8}}}})


def test_rotary_without_an_attention_layer_is_an_error():
    with pytest.raises(pulse.PulseError, match="rotary positions are applied inside attention"):
        pulse.recipe_from_dict({"model": {"layout": ["p"], "mixers": {"p": {"kind": "pulse"}},
                                          "positions": {"kind": "rotary"}}})


BAD_SIZES = ((30, {"num_heads": 4}), (16, {"chunk_size": 0}), (16, {"conv_size": 0}), (16, {"memory_slots": 1}))


@pytest.mark.parametrize("kind", registry.kinds("mixer"))
def test_bad_sizes_are_pulse_errors_from_recipes_and_constructors(kind):
    """A bad size is a PulseError when built from a recipe (the spec rejects it) and when given straight
    to the block's constructor (it either works or raises PulseError — never a raw ValueError)."""
    import inspect

    fields = type(pulse.make_spec(kind)).model_fields
    module = registry.get(kind).module
    tried = 0
    for dim, args in BAD_SIZES:
        if not set(args) <= set(fields):
            continue
        tried += 1
        try:
            pulse.build_mixer(kind, dim, device="meta", **args)
        except pulse.PulseError:
            pass
        else:  # 30 with 4 heads is fine for kinds whose head width is its own setting
            assert "num_heads" in args, f"{kind}: {args} was accepted"
        if module is not None and set(args) <= set(inspect.signature(module.__init__).parameters):
            try:
                module(dim, **args, device="meta")
            except pulse.PulseError:
                pass
    if not tried:  # a kind with none of these sizes (a toy mixer with only a `decay`) has nothing to check here
        pytest.skip(f"{kind} has none of the sizes {', '.join(k for _, a in BAD_SIZES for k in a)}")


def test_no_weight_decay_on_log_rates_and_initial_slots():
    from pulse.specs.run import TrainSpec
    from pulse.train.optim import make_optimizer

    recipe = pulse.recipe_from_dict({"model": {"dim": 16, "depth": 4, "layout": ["s", "p", "n", "a"], "mixers": {
        "s": {"kind": "ssm"}, "p": {"kind": "pulse", "num_heads": 2}, "n": {"kind": "ntm", "memory_slots": 4},
        "a": {"kind": "sparse_state_attention", "num_heads": 2}}}})
    model = pulse.build_model(recipe)
    opt = make_optimizer(model, TrainSpec(weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    tagged = [model.layers[0].mixer.A_log, model.layers[1].mixer.slot_init, model.layers[2].mixer.initial_memory,
              model.layers[3].mixer.slots]
    simple = pulse.SimplePulse(input_dim=4, slot_dim=8, num_slots=3, output_dim=2)
    assert getattr(simple.slots, "_no_weight_decay", False)
    assert all(id(p) not in decayed for p in tagged)
    assert any(id(p) in decayed for p in model.parameters())
    assert math.isfinite(sum(float(p.sum()) for p in tagged))


def test_describe_a_kind_from_the_library():
    from pulse.specs.describe import REQUIRED, describe

    info = describe("simple_pulse")
    assert info.role == "model" and info.defined_in == "pulse/models/sequence.py"
    params = {p.name: p for p in info.parameters}
    assert params["input_dim"].default == REQUIRED and params["num_slots"].default == 8
    assert describe("pulse").defined_in == "pulse/blocks/pulse/pulse_layer.py"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules():
    """Module-level imports among pulse's modules form no cycle (the package face aside)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("pulse"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("pulse")}
        graph[name] = {d for d in deps if d in modules and d != "pulse" and d != name}
    graph.pop("pulse", None)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep):] + [dep] if dep in trail else [node, dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_a_misspelt_mixer_table_is_not_an_unused_extra_mixer():
    with pytest.raises(pulse.PulseError, match=r"mixers.pluse: is used by no layer \(did you mean `pulse`\?\)"):
        pulse.recipe_from_dict({"model": {"layout": ["pulse"], "mixers": {
            "pulse": {"kind": "pulse"}, "pluse": {"kind": "pulse", "num_slots": 64}}}})
    # a differently named alternative (switched in with --set) stays allowed
    pulse.recipe_from_dict({"model": {"layout": ["pulse"], "mixers": {
        "pulse": {"kind": "pulse"}, "attn": {"kind": "attention"}}}})


@pytest.mark.parametrize("kind", registry.kinds("mixer"))
def test_every_mixer_names_wrong_dtypes_and_devices(kind):
    """Wrong shapes are covered by the property tests; wrong dtypes and devices are PulseErrors too."""
    mixer = pulse.build_mixer(
        kind, 16, **({"num_heads": 2} if "num_heads" in type(pulse.make_spec(kind)).model_fields else {})
    )
    x = torch.randn(2, 5, 16)
    with pytest.raises(pulse.PulseError, match="floating-point"):
        mixer(torch.zeros(2, 5, 16, dtype=torch.long))
    with pytest.raises(pulse.PulseError, match="float64 input"):
        mixer(x.double())
    with pytest.raises(pulse.PulseError, match="lives on cpu but got input on meta"):
        mixer(x.to("meta"))
