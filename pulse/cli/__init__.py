"""The `pulse` command. Commands are thin: load, call the library, print."""

# The order the modules register their commands is the order `pulse --help` lists them: not sorted.
# isort: off
from pulse.cli import inspect  # noqa: F401  (registers build, summarize, list, validate, schema)
from pulse.cli import catalog  # noqa: F401  (registers list, cp)
from pulse.cli import bench  # noqa: F401
from pulse.cli import generate  # noqa: F401
from pulse.cli import train  # noqa: F401
from pulse.cli import eval  # noqa: F401  (registers eval task|harness|context|passkey)
from pulse.cli import sweep  # noqa: F401
from pulse.cli import benchmark  # noqa: F401
from pulse.cli import export  # noqa: F401  (registers export, convert)
from pulse.cli import viz  # noqa: F401
from pulse.cli import data  # noqa: F401  (registers data prepare|inspect, tokenizer train)
# isort: on
import warnings

from pulse.cli.app import app

_default = warnings.showwarning


def _notes(message, category, filename, lineno, file=None, line=None) -> None:
    """PulseWarnings print as one `note:` line (no file and line number); other warnings as Python prints them."""
    from pulse.cli.common import err_console
    from pulse.errors import PulseWarning

    if issubclass(category, PulseWarning):
        from rich.markup import escape

        err_console.print(f"[yellow]note:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _default(message, category, filename, lineno, file, line)


def main() -> None:
    warnings.showwarning = _notes
    app()
