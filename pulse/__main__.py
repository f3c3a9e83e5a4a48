"""`python -m pulse …` runs the `pulse` command, e.g. from a source tree on PYTHONPATH that is not installed."""

from pulse.cli import main

main()
