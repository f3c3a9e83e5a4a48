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

# the floors of the house, lowest first: a room imports only rooms on floors below its own (directly or inside a
# function), so every arrow points down and no two rooms import each other. docs/architecture.md draws the same.
FLOORS = (
    ("errors", "version", "units"),
    ("threads", "paths", "registry", "generation", "runtime"),
    ("ops", "specs"),
    ("contract",),
    ("blocks", "summarize", "data"),
    ("models", "storage", "projection"),
    ("assemble", "tasks"),
    ("api",),
    ("hf", "visualization"),
    ("export", "bench"),
    ("evaluation",),
    ("train",),
    ("experiments",),
    ("cli",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
ROOMS = sorted(FLOOR)
FORBIDDEN = {room: {other for other in ROOMS if FLOOR[other] >= FLOOR[room] and other != room} for room in ROOMS}


def test_every_room_is_on_a_floor():
    here = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py")))) and not p.name.startswith("_")}
    assert here == set(FLOOR), f"rooms without a floor: {sorted(here - set(FLOOR))}; gone: {sorted(set(FLOOR) - here)}"


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
    if not FORBIDDEN[room]:
        return  # the top floor (cli) may import every room
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


def _imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pulse modules that module `name` (at `path`) imports anywhere in it (module level, inside functions,
    relative imports too)."""
    deps = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or node.level):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            if not base.startswith("pulse"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                deps.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names if a.name.startswith("pulse")}
    return {d for d in deps if d in modules and d not in ("pulse", name)}


def test_no_import_cycle_between_modules():
    """Imports among pulse's modules — at module level and inside functions alike — form no cycle (the package
    face `pulse/__init__.py` aside): a function-level import is still an arrow."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _imported_modules(name, path, modules) for name, path in modules.items() if name != "pulse"}
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


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    """The check above would catch a cycle hidden in a function-level import (as loop ↔ progress once was)."""
    (tmp_path / "a.py").write_text("def f():\n    from pulse.b import g\n")
    (tmp_path / "b.py").write_text("from pulse.a import f\n")
    modules = {"pulse.a": tmp_path / "a.py", "pulse.b": tmp_path / "b.py"}
    assert _imported_modules("pulse.a", tmp_path / "a.py", modules) == {"pulse.b"}
    assert _imported_modules("pulse.b", tmp_path / "b.py", modules) == {"pulse.a"}


def _function_lengths(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str) and len(body) > 1
            yield node, node.end_lineno - body[1 if docstring else 0].lineno + 1


def test_files_and_functions_are_short_enough_to_read_in_one_sitting():
    """No file in pulse/ over 400 lines, no function body (its docstring aside) over 60."""
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long_files.append(f"{path.relative_to(PACKAGE.parent)} ({len(text.splitlines())} lines)")
        long_functions += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)"
                           for node, n in _function_lengths(ast.parse(text)) if n > 60]
    assert not long_files and not long_functions, f"split these: {long_files + long_functions}"


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
