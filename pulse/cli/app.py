"""The typer application every command module attaches to."""

import typer

app = typer.Typer(
    name="pulse",
    help="PULSE: build, inspect, train, benchmark and generate from declarative model recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
