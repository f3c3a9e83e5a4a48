"""Training tasks, generated locally or read from local files: each makes batches and
scores a model's outputs. Each registers itself as a `task` kind: spec ↔ task class."""

from typing import Any

from pulse import registry
from pulse.data.tokenizer import HFTokenizer, Tokenizer, tokenizer_of
from pulse.specs import tasks as s
from pulse.specs.base import Spec
from pulse.tasks.babi import Babi
from pulse.tasks.base import IGNORE, IndexedTask, Task
from pulse.tasks.copy import Copy
from pulse.tasks.image import LraImage
from pulse.tasks.io import TokenizedTask
from pulse.tasks.listops import ListOps
from pulse.tasks.lra_text import LraText
from pulse.tasks.mqar import Mqar
from pulse.tasks.passkey import Passkey
from pulse.tasks.pathfinder import Pathfinder
from pulse.tasks.retrieval import LraRetrieval
from pulse.tasks.selective_copy import SelectiveCopy
from pulse.tasks.text import Text

registry.register("mqar", role="task", spec=s.MqarSpec, module=Mqar)
registry.register("babi", role="task", spec=s.BabiSpec, module=Babi)
registry.register("selective_copy", role="task", spec=s.SelectiveCopySpec, module=SelectiveCopy)
registry.register("copy", role="task", spec=s.CopySpec, module=Copy)
registry.register("listops", role="task", spec=s.ListOpsSpec, module=ListOps)
registry.register("text", role="task", spec=s.TextSpec, module=Text)
registry.register("passkey", role="task", spec=s.PasskeySpec, module=Passkey)
registry.register("lra_text", role="task", spec=s.LraTextSpec, module=LraText)
registry.register("lra_retrieval", role="task", spec=s.LraRetrievalSpec, module=LraRetrieval)
registry.register("pathfinder", role="task", spec=s.PathfinderSpec, module=Pathfinder)
registry.register("lra_image", role="task", spec=s.LraImageSpec, module=LraImage)


def reads_text(spec: Spec) -> bool:
    """Whether the task of this [task] spec reads text through a tokenizer (its class is a TokenizedTask)."""
    return issubclass(registry.get(spec.kind, "task").module, TokenizedTask)


def build_task(spec: Spec, *, tokenizer: Tokenizer | None = None) -> Task:
    """The task object of a validated [task] spec. A task that reads text is given `tokenizer` (the one
    pulse.data.tokenizer.tokenizer_of resolves for the recipe; None: the one task.tokenizer names, unsized);
    the others read none, and are built without it."""
    cls = registry.get(spec.kind, "task").module
    if issubclass(cls, TokenizedTask):
        return cls(spec, tokenizer=tokenizer)
    return cls(spec)


def task_of(recipe: Any, *, stored: HFTokenizer | None = None) -> Task:
    """The task of a recipe's [task] table, a task that reads text built with the recipe's tokenizer: the one
    pulse.data.tokenizer.tokenizer_of resolves (`stored`, the tokenizer saved beside a run's weights, wins)."""
    cls = registry.get(recipe.task.kind, "task").module
    if issubclass(cls, TokenizedTask):
        return cls(recipe.task, tokenizer=tokenizer_of(recipe, stored=stored))
    return cls(recipe.task)


__all__ = ["IGNORE", "Babi", "Copy", "IndexedTask", "ListOps", "LraImage", "LraRetrieval", "LraText", "Mqar", "Passkey",
           "Pathfinder", "SelectiveCopy", "Task", "Text", "TokenizedTask", "build_task", "reads_text", "task_of"]
