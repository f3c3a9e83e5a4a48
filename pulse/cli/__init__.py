"""The `pulse` command. Commands are thin: load, call the library, print."""

from pulse.cli import inspect  # noqa: F401  (registers build, summarize, list, validate, schema)
from pulse.cli import catalog  # noqa: F401  (registers list, cp)
from pulse.cli import bench  # noqa: F401
from pulse.cli import generate  # noqa: F401
from pulse.cli import train  # noqa: F401  (registers train, eval)
from pulse.cli import sweep  # noqa: F401
from pulse.cli import export  # noqa: F401  (registers export, convert)
from pulse.cli import viz  # noqa: F401
from pulse.cli import data  # noqa: F401  (registers data prepare|inspect, tokenizer train)
from pulse.cli.app import app


def main() -> None:
    app()
