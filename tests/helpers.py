"""Small shared test utilities."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from typer.testing import CliRunner

from pulse import contract
from pulse.cli import app


def run_cli(*args: str, env: dict[str, str] | None = None):
    """Invoke the `pulse` CLI in-process at 80 columns; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", **(env or {})})


def load_tool(name: str):
    """The script tools/<name>.py as a module (the tools are scripts, not part of the package)."""
    path = Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_grads_close(out_a, out_b, inputs, what):
    """Same values, and same gradients of a random projection of the outputs, for every input."""
    for a, b in zip(out_a, out_b, strict=True):
        contract.assert_close(a, b, f"{what}: values")
    weights = [torch.randn_like(a) for a in out_a]
    grads_a = torch.autograd.grad(sum((a * w).sum() for a, w in zip(out_a, weights)), inputs, retain_graph=True)
    grads_b = torch.autograd.grad(sum((b * w).sum() for b, w in zip(out_b, weights)), inputs)
    for i, (ga, gb) in enumerate(zip(grads_a, grads_b, strict=True)):
        contract.assert_close(ga, gb, f"{what}: gradient of input {i}")
