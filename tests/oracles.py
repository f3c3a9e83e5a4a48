"""Outside references for the mixer ops: fla's own plain-PyTorch `naive.py` files and Transformers' reference
layers, written by others, that PULSE's ops must equal.

fla's naive files are loaded by path from the installed `fla-core` (the `dev` extra), so neither the `fla` package
nor Triton is imported: the oracle runs on every CPU. A missing fla-core is a test error, not a skip — the dev extra
installs it.
"""

from __future__ import annotations

import importlib.util
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
