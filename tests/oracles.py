"""Outside references for the mixer ops: fla's own plain-PyTorch `naive.py` files and Transformers' reference
layers, written by others, that PULSE's ops must equal.

fla's naive files are loaded by path from the installed `fla-core` (the `dev` extra), so neither the `fla` package
nor Triton is imported: the oracle runs on every CPU. A missing fla-core is a test error, not a skip — the dev extra
installs it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType


def fla_naive(op: str) -> ModuleType:
    """fla's `fla/ops/<op>/naive.py` as a module (op: "gdn2", "kda", "generalized_delta_rule/dplr", …)."""
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fla-core is not installed; the tests' oracles need it: pip install -e '.[dev]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "ops" / op / "naive.py"
    name = f"fla_naive_{op.replace('/', '_')}"
    if name not in sys.modules:
        loaded = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


_CASTS = ((re.compile(r"\.float\(\)"), ".double()"), (re.compile(r"torch\.float32\b"), "torch.float64"),
          (re.compile(r"torch\.float\b(?!\d)"), "torch.float64"))


def fla_naive_float64(op: str) -> ModuleType:
    """fla's naive module with its float32 casts made float64 (`.float()`, `torch.float32`, `torch.float`): fla's
    references compute in float32 whatever they are given, so as written they agree with a float64 op to about 1e-6
    only; with the casts rewritten the arithmetic is fla's, untouched, in float64."""
    path = Path(fla_naive(op).__file__)
    source = path.read_text()
    if not any(pattern.search(source) for pattern, _ in _CASTS):
        raise RuntimeError(f"fla's {path} has no float32 cast left to rewrite; revisit fla_naive_float64")
    for pattern, double in _CASTS:
        source = pattern.sub(double, source)
    name = f"fla_naive_{op.replace('/', '_')}_float64"
    if name not in sys.modules:
        module = ModuleType(name)
        module.__file__ = str(path)
        exec(compile(source, str(path), "exec"), module.__dict__)
        sys.modules[name] = module
    return sys.modules[name]
