"""The one exception type for mistakes a user can make."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class PulseError(Exception):
    """A problem the user can fix: a bad recipe, a wrong shape, a missing file.

    The message says what is wrong and what to change. The CLI prints it without a
    traceback and exits with code 2; a traceback is reserved for bugs.
    """


class PulseWarning(UserWarning):
    """Something a user should know that is not an error (a converted dtype); the CLI prints it as a note."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean `x`?)' suffix naming the closest choice, or ''."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean `{match[0]}`?)" if match else ""


def seed_alias(name: str, value: Any, seed_name: str, seed_value: Any, default: Any = None) -> Any:
    """`value`, or the seed-named `seed_value` when only that was given; both, differing, is an error."""
    if seed_value is None:
        return value
    if value is not None and value != default and value != seed_value:
        raise PulseError(f"{name}={value!r} and its seed name {seed_name}={seed_value!r} disagree; pass only {name}.")
    return seed_value
