"""A tokenizer is resolved from a recipe in one file: pulse/data/tokenizer.py (tokenizer_of).

Read from the source as tests/test_architecture.py reads the imports: outside that file no module
reads a recipe's tokenizer name (task.tokenizer, model.tokenizer), sizes the byte tokenizer for a
vocabulary, or loads a tokenizer file other than one stored beside weights (tokenizer.json, `FILE`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pulse

PACKAGE = Path(pulse.__file__).parent
HOME = Path("data") / "tokenizer.py"


def _chain(node: ast.AST) -> list[str]:
    """The names of an attribute chain, innermost first: recipe.task.tokenizer → [recipe, task, tokenizer]."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names[::-1]


def _a_table(holder: list[str]) -> bool:
    """Whether `holder.tokenizer` reads a name from a recipe's [task] or [model] table (spec.tokenizer,
    recipe.task.tokenizer, recipe.model.tokenizer), not a built task's or a model's resolved tokenizer."""
    return holder[-1:] == ["spec"] or (len(holder) > 1 and holder[-2] in ("recipe", "spec")
                                       and holder[-1] in ("task", "model"))


def tokenizer_choices(package: Path) -> list[str]:
    """Every place outside data/tokenizer.py that picks a tokenizer from a recipe's names, as `file:line what`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel == HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr == "tokenizer" and isinstance(node.ctx, ast.Load):
                holder = _chain(node.value)
                if _a_table(holder):
                    found.append(f"{where} reads {'.'.join(holder)}.tokenizer")
            if not isinstance(node, ast.Call):
                continue
            func = _chain(node.func)
            if func and func[-1] == "for_vocab":
                found.append(f"{where} sizes the byte tokenizer ({'.'.join(func)})")
            if func == ["ByteTokenizer"]:
                found.append(f"{where} builds a ByteTokenizer")
            if func == ["getattr"] and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                    and node.args[1].value == "tokenizer" and _a_table(_chain(node.args[0])):
                found.append(f"{where} reads {'.'.join(_chain(node.args[0]))}.tokenizer with getattr")
            if func[-2:] == ["HFTokenizer", "load"]:
                stored = any(isinstance(n, ast.Name) and n.id == "FILE" for a in node.args for n in ast.walk(a))
                if not stored:
                    found.append(f"{where} loads a tokenizer file by name (HFTokenizer.load)")
    return found


def test_only_data_tokenizer_py_resolves_a_tokenizer_from_a_recipe():
    found = tokenizer_choices(PACKAGE)
    assert not found, ("a tokenizer is chosen outside pulse/data/tokenizer.py; call tokenizer_of(recipe, stored=…) "
                       "or Source.tokenizer instead:\n  " + "\n  ".join(found))


def test_the_check_sees_the_ways_a_tokenizer_was_picked_before(tmp_path):
    """The rule catches each spelling the seven places used (so it cannot pass by reading nothing)."""
    room = tmp_path / "pkg"
    (room / "data").mkdir(parents=True)
    (room / "data" / "tokenizer.py").write_text("def f(recipe):\n    return recipe.task.tokenizer\n")
    (room / "old.py").write_text(
        "def a(recipe, model, task):\n"
        "    name = getattr(recipe.task, 'tokenizer', None) or recipe.model.tokenizer\n"
        "    tok = ByteTokenizer.for_vocab(model.vocab_size)\n"
        "    other = HFTokenizer.load(name)\n"
        "    plain = ByteTokenizer(specials=False)\n"
        "    return self.spec.tokenizer, spec.task.tokenizer, recipe.task.tokenizer\n"
        "def b(lm, task, folder):\n"  # a model's or a built task's tokenizer, a stored file: fine
        "    return lm.tokenizer, task.tokenizer, getattr(lm, 'tokenizer', None), HFTokenizer.load(folder / FILE)\n"
    )
    found = tokenizer_choices(room)
    assert len(found) == 8 and all(f.startswith("old.py:") for f in found), found
