"""What every [task] spec shares (pulse/specs/tasks.py holds the kinds; docs/tasks.md says how to add one).

`TaskSpec`: the kind, the seed of the task's data, and a tiny example of itself for the task contract.
`GeneratedSpec`: a task whose examples are generated from (seed, split, index), and how many each split
holds (`TrainCount`, `TestCount`: one meaning, each kind its own default). `GivenPath` and `Pattern`
check the paths of the tasks that read files.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from pulse.specs.base import Spec


def _given_path(value: str) -> str:
    """A path that is given is not blank: `""` would read the current directory."""
    if not value.strip():
        raise ValueError("is empty, which would read the current directory; give the file or folder to read")
    return value


def _pattern_below(value: str) -> str:
    """A glob relative to task.path that stays inside it: not empty, not absolute, no `..`."""
    if not value.strip():
        raise ValueError('is empty; give a glob relative to task.path, such as "**/*" (every file) or "*.txt"')
    if value.startswith(("/", "\\", "~")) or PureWindowsPath(value).drive:
        raise ValueError(f"`{value}` is absolute; a pattern is relative to task.path: set task.path to the folder "
                         "and task.pattern to the glob below it")
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        raise ValueError(f"`{value}` climbs out of task.path with `..`; set task.path to the folder that holds the "
                         "files instead")
    return value


GivenPath = Annotated[str, AfterValidator(_given_path)]
Pattern = Annotated[str, AfterValidator(_pattern_below)]
# how many examples a split holds: one meaning, each task its own default (and words where they differ)
TrainCount = Annotated[int, Field(ge=1, description="training examples (each generated from its index)")]
TestCount = Annotated[int, Field(ge=1, description="held-out examples")]


class TaskSpec(Spec):
    """What every [task] table shares: its kind, the seed of its data, and a tiny example of itself.

    `example_settings` are settings small enough that the task contract (pulse.contract.check_task) runs
    in a fraction of a second; `example(folder)` turns them into a tiny recipe (a task that reads files
    overrides it to write a small example of them under `folder`). tests/test_task_contract.py runs the
    contract over every registered task kind this way.
    """

    kind: str
    seed: int = Field(0, ge=0, description="seed of the generated data (the test set uses a separate stream)")
    example_settings: ClassVar[dict[str, Any]]

    @classmethod
    def example(cls, folder: Path) -> dict[str, Any]:
        """A tiny recipe of this kind: {"task": the [task] table}, plus "model" where the default one (a
        one-layer language model over 260 ids, refitted by the task's `fit_model` where it has one) does not fit.
        `folder` is an empty folder for any files the task reads."""
        return {"task": {"kind": cls.model_fields["kind"].default, **cls.example_settings}}


class GeneratedSpec(TaskSpec):
    """A task whose examples are generated from (seed, split, index): how many each split holds."""

    num_train: TrainCount = 20_000
    num_test: TestCount = 1_000
