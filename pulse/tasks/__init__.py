"""Training tasks, generated locally or read from local files: each makes batches and
scores a model's outputs. Registered as `task` kinds in pulse.assemble.tasks."""

from pulse.tasks.base import IGNORE, IndexedTask, Task
from pulse.tasks.copy import Copy
from pulse.tasks.listops import ListOps
from pulse.tasks.mqar import Mqar
from pulse.tasks.selective_copy import SelectiveCopy
from pulse.tasks.text import Text

__all__ = ["IGNORE", "Copy", "IndexedTask", "ListOps", "Mqar", "SelectiveCopy", "Task", "Text"]
