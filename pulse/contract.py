"""The block contract every sequence mixer follows, and checks that hold blocks to it.

A mixer maps (b, t, d) → (b, t, d) and carries a state that lets it continue a
sequence later. The checks below are the properties of docs/architecture.md; the test suite
runs them over every registered mixer, and you can run them on your own block.

# b batch · t time · d model
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from pulse.errors import PulseError


def count_params(module: nn.Module, *, trainable: bool = False) -> int:
    """Parameters counted once each, however many modules share them (tied embeddings: `parameters()`
    yields a shared tensor once); `trainable` counts only those that require gradients."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Tag a parameter that weight decay would harm (a log-decay rate, learned initial slots or
    memory): the optimiser never decays it, whatever its shape. Returns the parameter."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


# One place for tolerances: (rtol, atol) per dtype.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2e-2, 2e-2),
}


@runtime_checkable
class Mixer(Protocol):
    """A sequence mixer: forward over a chunk of tokens, or step one token at a time.

    `doc_starts` (pulse.ops.documents) marks where documents start inside the window: there the
    state is reset to the initial state (forward: a (b, t) bool mask or one 1-D integer tensor of
    positions per row; step: a (b,) bool tensor, True for rows whose token starts a document)."""

    def forward(self, x: Tensor, state: Any = None, *, doc_starts: Any = None) -> tuple[Tensor, Any]: ...

    def init_state(self, batch: int, *, device=None, dtype=None) -> Any: ...

    def step(self, x_t: Tensor, state: Any, *, doc_starts: Tensor | None = None) -> tuple[Tensor, Any]: ...

    def flops_per_token(self, seq_len: int) -> float: ...

    def state_numel(self, seq_len: int) -> int: ...

    def param_count(self) -> int: ...


def check_input(module: nn.Module, x: Tensor, ndim: int = 3) -> None:
    """Raise PulseError unless x is (batch, time, dim) — or (batch, dim) with ndim=2 — of the module's width."""
    dim = getattr(module, "dim", None)
    if x.ndim != ndim or (dim is not None and x.shape[-1] != dim) or (ndim == 3 and x.shape[1] == 0):
        want = "(batch, time, dim)" if ndim == 3 else "(batch, dim)"
        raise PulseError(
            f"{type(module).__name__} expects input of shape {want} with dim={dim} and time ≥ 1, "
            f"got {tuple(x.shape)}; reshape the input or build the block with dim={x.shape[-1] if x.ndim else '?'}."
        )
    if not x.is_floating_point():
        raise PulseError(
            f"{type(module).__name__} expects floating-point features, got {x.dtype}; embed token ids first."
        )
    param = next(module.parameters(), None)
    if param is None:
        return
    if x.device != param.device:
        raise PulseError(
            f"{type(module).__name__} lives on {param.device} but got input on {x.device}; "
            f"move one of them, e.g. x.to('{param.device}')."
        )
    if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise PulseError(
            f"{type(module).__name__} has {param.dtype} weights but got {x.dtype} input; cast one of them "
            f"(x.to({param.dtype}) or module.to({x.dtype})), or run under torch.autocast."
        )


def tensors(tree: Any) -> list[Tensor]:
    """Every tensor in a nested state (dicts, lists, tuples, dataclass-like objects)."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in tensors(v)]
    if hasattr(tree, "__dict__"):
        return [t for v in vars(tree).values() for t in tensors(v)]
    return []


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    rtol, atol = TOLERANCES.get(actual.dtype, (1e-5, 1e-5))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def check_shape(mixer: nn.Module, x: Tensor) -> None:
    y, _ = mixer(x)
    assert y.shape == x.shape, f"shape: output {tuple(y.shape)} != input {tuple(x.shape)}"
    assert torch.isfinite(y).all(), "shape: output has non-finite values"


def check_causal(mixer: nn.Module, x: Tensor, t: int) -> None:
    """Changing x[:, t:] leaves y[:, :t] unchanged."""
    y, _ = mixer(x)
    x2 = x.clone()
    x2[:, t:] = torch.randn_like(x2[:, t:]) * 3
    y2, _ = mixer(x2)
    assert_close(y2[:, :t], y[:, :t], f"causal: outputs before t={t} moved when inputs from t on changed")


def check_split(mixer: nn.Module, x: Tensor, k: int) -> None:
    """forward(x) == forward(x[:, :k]) then forward(x[:, k:], state)."""
    y, _ = mixer(x)
    y1, state = mixer(x[:, :k])
    y2, _ = mixer(x[:, k:], state)
    assert_close(torch.cat((y1, y2), dim=1), y, f"split at k={k}")


def check_step(mixer: nn.Module, x: Tensor) -> None:
    """forward(x) == step applied token by token from init_state."""
    y, _ = mixer(x)
    state = mixer.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    outs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outs.append(y_t)
    assert_close(torch.stack(outs, dim=1), y, "step vs forward")


def check_batch(mixer: nn.Module, x: Tensor, row: int = 0) -> None:
    """Row `row` of y depends only on row `row` of x."""
    y, _ = mixer(x)
    x2 = torch.randn_like(x) * 3
    x2[row] = x[row]
    y2, _ = mixer(x2)
    assert_close(y2[row], y[row], f"batch: row {row} changed when other rows changed")
    alone, _ = mixer(x[row : row + 1])
    assert_close(alone[0], y[row], f"batch: row {row} alone differs from row {row} in a batch")


def check_gradient(mixer: nn.Module, x: Tensor) -> None:
    """Finite gradients for the input and for every trainable parameter."""
    mixer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y, state = mixer(x)
    loss = y.square().mean() + sum(s.float().square().mean() for s in tensors(state) if s.is_floating_point())
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), "gradient: input gradient missing or not finite"
    for name, p in mixer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"gradient: parameter `{name}` got no gradient"
            assert torch.isfinite(p.grad).all(), f"gradient: parameter `{name}` has non-finite gradient"


def check_documents(mixer: nn.Module, x: Tensor, starts: list[list[int]], x_next: Tensor) -> None:
    """With document starts, the output at every position (values and gradients) equals that of its
    document run alone from the initial state, and the state after the window continues the last
    document as its own state does (forward over x_next and one `step`; equal tensors where the
    two states have equal shapes). starts: sorted positions per row; x_next: (b, t2, d)."""
    from pulse.ops.documents import split_rows

    b, t, _ = x.shape
    weights = torch.randn_like(x)
    mixer.zero_grad(set_to_none=True)
    packed = x.clone().requires_grad_(True)
    y, state = mixer(packed, doc_starts=[torch.tensor(s, dtype=torch.long) for s in starts])
    (y * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in mixer.named_parameters() if p.grad is not None}
    mixer.zero_grad(set_to_none=True)
    alone_x = x.clone().requires_grad_(True)
    ends: list[Any] = []
    total = 0
    for row in range(b):
        bounds = sorted({0, *starts[row], t})
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            y_doc, end = mixer(alone_x[row : row + 1, lo:hi])
            assert_close(y[row : row + 1, lo:hi].detach(), y_doc.detach(),
                         f"documents: row {row}, document {lo}..{hi - 1} differs from that document alone")
            total = total + (y_doc * weights[row : row + 1, lo:hi]).sum()
        ends.append(end)
    total.backward()
    assert_close(packed.grad, alone_x.grad, "documents: input gradients differ from the documents' alone")
    for name, p in mixer.named_parameters():
        if name in grads:
            assert p.grad is not None, f"documents: `{name}` gets a gradient packed but not alone"
            assert_close(grads[name], p.grad, f"documents: gradient of `{name}` differs from the documents' alone")
    mixer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for row, (packed_state, end) in enumerate(zip(split_rows(state, b), ends)):
            a, e = tensors(packed_state), tensors(end)
            if len(a) == len(e) and all(u.shape == v.shape for u, v in zip(a, e)):
                for u, v in zip(a, e):
                    assert_close(u, v, f"documents: row {row}'s state differs from its last document's alone")
            nxt = x_next[row : row + 1]
            assert_close(mixer(nxt, packed_state)[0], mixer(nxt, end)[0],
                         f"documents: row {row} continues differently from its last document alone")
            assert_close(mixer.step(nxt[:, 0], packed_state)[0], mixer.step(nxt[:, 0], end)[0],
                         f"documents: row {row} steps differently from its last document alone")
