"""`pulse bench`: speed, memory and scaling of recipes or single mixers, side by side.

Every measurement runs in a fresh process (`pulse.bench.worker`); `runner` schedules
and interleaves them, `fit` finds scaling exponents, `report` prints and plots.
"""

from pulse.bench.fit import ScalingFit, fit_scaling, local_exponents
from pulse.bench.runner import (
    Settings,
    System,
    mixer_system,
    parse_lengths,
    parse_mixer,
    recipe_system,
    run_bench,
    with_compile,
    with_documents,
)

__all__ = [
    "ScalingFit",
    "Settings",
    "System",
    "fit_scaling",
    "local_exponents",
    "mixer_system",
    "parse_lengths",
    "parse_mixer",
    "recipe_system",
    "run_bench",
    "with_compile",
    "with_documents",
]
