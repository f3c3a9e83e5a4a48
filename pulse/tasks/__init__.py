"""Training tasks, generated locally or read from local files: each makes batches and
scores a model's outputs. Each registers itself as a `task` kind: spec ↔ task class."""

from pulse import registry
from pulse.specs import tasks as s
from pulse.specs.base import Spec
from pulse.tasks.babi import Babi
from pulse.tasks.base import IGNORE, IndexedTask, Task
from pulse.tasks.copy import Copy
from pulse.tasks.image import LraImage
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


def build_task(spec: Spec) -> Task:
    """The task object of a validated [task] spec."""
    return registry.get(spec.kind, "task").module(spec)


__all__ = ["IGNORE", "Babi", "Copy", "IndexedTask", "ListOps", "LraImage", "LraRetrieval", "LraText", "Mqar", "Passkey",
           "Pathfinder", "SelectiveCopy", "Task", "Text", "build_task"]
