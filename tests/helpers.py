"""Small shared test utilities."""

from __future__ import annotations

from typer.testing import CliRunner

from pulse.cli import app


def run_cli(*args: str, env: dict[str, str] | None = None):
    """Invoke the `pulse` CLI in-process at 80 columns; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80", **(env or {})})
