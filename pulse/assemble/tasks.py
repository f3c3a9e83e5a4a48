"""Registrations of the task kinds: kind ↔ spec ↔ builder (the builder returns the task object)."""

from __future__ import annotations

from pulse.assemble.context import BuildContext
from pulse.registry import get, register
from pulse.specs import tasks as s
from pulse.specs.base import Spec
from pulse.tasks import Copy, ListOps, Mqar, SelectiveCopy, Task, Text


def build_task(spec: Spec, ctx: BuildContext | None = None) -> Task:
    """The task object of a validated [task] spec."""
    return get(spec.kind, "task").builder(spec, ctx or BuildContext(0))


register("mqar", role="task", spec=s.MqarSpec, builder=lambda spec, ctx: Mqar(spec))
register("selective_copy", role="task", spec=s.SelectiveCopySpec, builder=lambda spec, ctx: SelectiveCopy(spec))
register("copy", role="task", spec=s.CopySpec, builder=lambda spec, ctx: Copy(spec))
register("listops", role="task", spec=s.ListOpsSpec, builder=lambda spec, ctx: ListOps(spec))
register("text", role="task", spec=s.TextSpec, builder=lambda spec, ctx: Text(spec))
