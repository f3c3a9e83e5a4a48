"""Training tasks, generated locally or read from local files: each makes batches and
scores a model's outputs. Each registers itself as a `task` kind: spec ↔ task class."""

from pulse import registry
from pulse.specs import tasks as s
from pulse.specs.base import Spec
from pulse.tasks.base import IGNORE, IndexedTask, Task
from pulse.tasks.copy import Copy
from pulse.tasks.listops import ListOps
from pulse.tasks.mqar import Mqar
from pulse.tasks.passkey import Passkey
from pulse.tasks.selective_copy import SelectiveCopy
from pulse.tasks.text import Text

registry.register("mqar", role="task", spec=s.MqarSpec, module=Mqar)
registry.register("selective_copy", role="task", spec=s.SelectiveCopySpec, module=SelectiveCopy)
registry.register("copy", role="task", spec=s.CopySpec, module=Copy)
registry.register("listops", role="task", spec=s.ListOpsSpec, module=ListOps)
registry.register("text", role="task", spec=s.TextSpec, module=Text)
registry.register("passkey", role="task", spec=s.PasskeySpec, module=Passkey)


def build_task(spec: Spec) -> Task:
    """The task object of a validated [task] spec."""
    return registry.get(spec.kind, "task").module(spec)


__all__ = ["IGNORE", "Copy", "IndexedTask", "ListOps", "Mqar", "Passkey", "SelectiveCopy", "Task", "Text",
           "build_task"]
