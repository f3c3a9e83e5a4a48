"""Recording what layers compute (slot values, routing weights, attention probabilities) during a forward.

Blocks that can be watched have a class attribute `capture_sink = None`; inside
`capture(model)` each such module gets a sink that appends what the block reports, under
its module path. Outside it the blocks test one attribute and record nothing, and inside
it they compute exactly the same outputs (the probabilities are computed beside, not
instead of, the fused attention).

# b batch · t time · n chunks · s slots · h heads · c chunk size · k slot dim
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from pulse.errors import PulseError

#: what each watched block reports, and its shape (one entry per forward call, or per chunk for "route")
RECORDS = {
    "attention": "CausalSelfAttention: softmax probabilities (b, h, t, n+t) over cached and new keys",
    "slots": "PULSE slot layers (chunk-recurrent, and gate delta): the slots each chunk read (b, n, s, k), "
    "i.e. after the chunks before it",
    "read": "chunk-recurrent layers: each token's attention on the slots (b, h, t, s)",
    "route": "PulseLayer: routing weights of slots over a chunk's tokens, (b, h, s, c) per chunk or (b, n, h, s, c)",
    "budget": "PulseLayer with an allocator: slot budget of each chunk (b, n)",
}


class Capture:
    """Records per module path: `records[path][name]` is the list of tensors reported, in call order."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, list[Tensor]]] = defaultdict(lambda: defaultdict(list))

    def sink(self, path: str):
        def record(name: str, value: Tensor) -> None:
            self.records[path][name].append(value)

        return record

    def get(self, path: str, name: str) -> list[Tensor]:
        return list(self.records.get(path, {}).get(name, []))

    def clear(self) -> None:
        self.records.clear()


def watched(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every module in `model` that can report to a capture."""
    return [(path, m) for path, m in model.named_modules() if "capture_sink" in _class_attrs(type(m))]


def _class_attrs(cls: type) -> set[str]:
    return {name for klass in cls.__mro__ for name in vars(klass)}


@contextmanager
def capture(model: nn.Module) -> Iterator[Capture]:
    """Within the block, every watchable block of `model` records into the returned Capture.

    >>> with capture(model) as cap:
    ...     model(ids)
    >>> cap.get("model.stack.layers.0.mixer", "slots")
    """
    modules = watched(model)
    if not modules:
        raise PulseError(
            f"{type(model).__name__} has no block that can be watched (attention or chunk-recurrent PULSE layers); "
            "there is nothing to capture."
        )
    if any("capture_sink" in vars(m) for _, m in modules):
        raise PulseError("this model is already being captured; nest no capture() blocks on the same model.")
    cap = Capture()
    try:
        for path, module in modules:
            module.capture_sink = cap.sink(path)
        yield cap
    finally:
        for _, module in modules:
            vars(module).pop("capture_sink", None)
